package daemon

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/deliverylog"
)

// DeliveryLogConfig is the per-message delivery log (docs/delivery-log.md).
// It is off unless enabled: the daemon has no data directory of its own to
// put it under, and a log nobody exports only fills the disk.
type DeliveryLogConfig struct {
	Enabled bool   `yaml:"enabled"`
	Dir     string `yaml:"dir"`
	// SegmentSize rotates a segment at this many bytes (default 64 MiB).
	SegmentSize int64 `yaml:"segment_size"`
	// SegmentAge rotates a segment this long after its first record (default 15m).
	SegmentAge Duration `yaml:"segment_age"`
	// Fsync is none, interval (default) or always; FsyncInterval its period.
	Fsync         string   `yaml:"fsync"`
	FsyncInterval Duration `yaml:"fsync_interval"`
	// MaxDisk bounds the segments on disk (default 4 GiB).
	MaxDisk int64                    `yaml:"max_disk"`
	Address DeliveryLogAddressConfig `yaml:"address"`
	Export  DeliveryLogExportConfig  `yaml:"export"`
}

// DeliveryLogAddressConfig says how much of each address the log keeps.
type DeliveryLogAddressConfig struct {
	Tokens string `yaml:"tokens"` // device tokens, web push endpoints, webhook recipients (default truncate)
	Email  string `yaml:"email"`  // default hash
	Phone  string `yaml:"phone"`  // default hash
	Salt   Secret `yaml:"salt"`
}

// DeliveryLogExportConfig is the scheduled Parquet export.
type DeliveryLogExportConfig struct {
	// Interval runs the export this often (0: only `notifyd log export`).
	Interval     Duration  `yaml:"interval"`
	Dir          string    `yaml:"dir"`
	S3           *S3Config `yaml:"s3"`
	RowGroupRows int64     `yaml:"row_group_rows"`
}

// S3Config is an S3-compatible bucket for the export.
type S3Config struct {
	Endpoint  string `yaml:"endpoint"`
	Region    string `yaml:"region"`
	Bucket    string `yaml:"bucket"`
	Prefix    string `yaml:"prefix"`
	PathStyle bool   `yaml:"path_style"`
	// Insecure talks plain http (a local MinIO); default https.
	Insecure  bool   `yaml:"insecure"`
	AccessKey Secret `yaml:"access_key"`
	SecretKey Secret `yaml:"secret_key"`
}

func (c DeliveryLogConfig) validate() ConfigErrors {
	var errs ConfigErrors
	add := func(path, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if !c.Enabled {
		return nil
	}
	if c.Dir == "" {
		add("delivery_log.dir", "required when the delivery log is enabled (e.g. /var/lib/notifyd/delivery-log)")
	}
	if _, err := deliverylog.ParseFsyncPolicy(c.Fsync); err != nil {
		add("delivery_log.fsync", "%v", err)
	}
	for k, v := range map[string]string{"tokens": c.Address.Tokens, "email": c.Address.Email, "phone": c.Address.Phone} {
		if _, err := deliverylog.ParseAddressMode(v, deliverylog.AddressHash); err != nil {
			add("delivery_log.address."+k, "%v", err)
		}
	}
	if c.SegmentSize < 0 || c.MaxDisk < 0 {
		add("delivery_log", "segment_size and max_disk must not be negative")
	}
	if c.MaxDisk > 0 && c.SegmentSize > c.MaxDisk {
		add("delivery_log.max_disk", "smaller than segment_size")
	}
	if c.Export.Dir != "" && c.Export.S3 != nil {
		add("delivery_log.export", "dir and s3 are exclusive")
	}
	if c.Export.Interval > 0 && c.Export.Dir == "" && c.Export.S3 == nil {
		add("delivery_log.export", "interval is set but neither dir nor s3 says where to")
	}
	if s := c.Export.S3; s != nil {
		if s.Endpoint == "" || strings.Contains(s.Endpoint, "://") {
			add("delivery_log.export.s3.endpoint", "required, host[:port] without a scheme (insecure: true for http)")
		}
		if s.Bucket == "" {
			add("delivery_log.export.s3.bucket", "required")
		}
		if s.AccessKey.Set() != s.SecretKey.Set() {
			add("delivery_log.export.s3", "access_key and secret_key go together (neither: environment or instance credentials)")
		}
	}
	return errs
}

// LogConfig is the deliverylog.Config the settings describe.
func (c DeliveryLogConfig) LogConfig() deliverylog.Config {
	fsync, _ := deliverylog.ParseFsyncPolicy(c.Fsync)
	return deliverylog.Config{Dir: c.Dir, SegmentBytes: c.SegmentSize, SegmentAge: time.Duration(c.SegmentAge), Fsync: fsync,
		FsyncInterval: time.Duration(c.FsyncInterval), MaxDisk: c.MaxDisk}
}

// Masker is the address policy the settings describe.
func (c DeliveryLogConfig) Masker() *deliverylog.Masker {
	tok, _ := deliverylog.ParseAddressMode(c.Address.Tokens, deliverylog.AddressTruncate)
	em, _ := deliverylog.ParseAddressMode(c.Address.Email, deliverylog.AddressHash)
	ph, _ := deliverylog.ParseAddressMode(c.Address.Phone, deliverylog.AddressHash)
	return &deliverylog.Masker{Token: tok, Email: em, Phone: ph, Salt: c.Address.Salt.Value()}
}

// ExportTarget builds the export's target; nil when none is configured.
func (c DeliveryLogConfig) ExportTarget() (deliverylog.Target, error) {
	switch {
	case c.Export.S3 != nil:
		s := c.Export.S3
		return deliverylog.NewS3Target(deliverylog.S3Config{Endpoint: s.Endpoint, Secure: !s.Insecure, Region: s.Region, Bucket: s.Bucket,
			Prefix: s.Prefix, PathStyle: s.PathStyle, AccessKey: s.AccessKey.Value(), SecretKey: s.SecretKey.Value()})
	case c.Export.Dir != "":
		return deliverylog.LocalTarget{Dir: c.Export.Dir}, nil
	}
	return nil, nil
}

// OutcomeLogger records every final outcome of one channel's pool in the
// delivery log, then passes the outcomes on. With fsync always the
// outcomes are passed on (and so confirmed in the campaign's ledger) only
// once their records are on disk.
type OutcomeLogger struct {
	Log     *deliverylog.Log
	Masker  *deliverylog.Masker
	Channel string
	Now     func() time.Time
	Next    channels.OutcomeSink
}

// Outcomes implements channels.OutcomeSink.
func (o *OutcomeLogger) Outcomes(ctx context.Context, outs []channels.Outcome) {
	now := o.Now()
	b := o.Log.Batch()
	b.Grow(len(outs) * 192) // about a record's size (docs/delivery-log.md: ~170 bytes)
	var r deliverylog.Record
	var scratch [96]byte
	for i := range outs {
		FillRecord(&r, &outs[i], o.Channel, nil, now)
		// The masked address lives in scratch until Add has encoded it.
		a := o.Masker.AppendMask(scratch[:0], o.Channel, recordAddress(outs[i].Message))
		r.Address = unsafe.String(unsafe.SliceData(a), len(a))
		b.Add(&r)
	}
	_ = o.Log.Commit(ctx, b) // drops are counted and logged by the log; deliveries go on
	o.Next.Outcomes(ctx, outs)
}

// recordAddress is the address a message went to: its To, or a web push
// subscription's endpoint.
func recordAddress(msg *channels.Message) string {
	if msg.Subscription != nil {
		return msg.Subscription.Endpoint
	}
	return msg.To
}

// FillRecord describes one outcome as a delivery log record; with a Masker
// it also fills the address (the senders' path masks into a buffer instead).
func FillRecord(r *deliverylog.Record, out *channels.Outcome, channel string, m *deliverylog.Masker, now time.Time) {
	msg := out.Message
	if !out.At.IsZero() {
		// The outcome's own time: queued = at - latency must not move past
		// sent_at by the time the outcome took to reach this sink.
		now = out.At
	}
	*r = deliverylog.Record{
		MessageID: msg.ID, Event: "outcome", Kind: "campaign", Campaign: msg.Campaign, UserID: msg.UserID, UserKey: int64(msg.UserKey),
		Channel: channel, ProviderID: out.ProviderID, Outcome: string(out.Status),
		Reason: string(out.Reason), ProviderCode: out.Code, Variant: msg.Variant, Attempt: int32(out.Attempts), Locale: msg.Locale,
		QueuedAt: now.Add(-out.Latency).UnixMicro(), SentAt: deliverylog.Micros(out.SentAt), AnsweredAt: now.UnixMicro(),
	}
	if m != nil {
		r.Address = m.Mask(channel, recordAddress(msg))
	}
	if strings.HasPrefix(msg.ID, campaigns.FlowPrefix) || strings.HasPrefix(msg.ID, "f:") {
		r.Kind = "flow"
		r.Trigger = flowTrigger(msg.ID, msg.Campaign)
	}
}

// flowTrigger takes the trigger's scope out of a flow message id
// (f:FLOW:SCOPE:USERKEY:CHANNEL:N): "k:order-1", "t:…" or "w:…".
func flowTrigger(id, flow string) string {
	s := strings.TrimPrefix(id, "f:")
	s = strings.TrimPrefix(s, strings.TrimPrefix(flow, "f:")+":")
	for range 3 {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			return ""
		}
		s = s[:i]
	}
	return s
}

// openDeliveryLog opens the log and its exporter when the config enables it.
func (d *Daemon) openDeliveryLog() error {
	c := d.cfg.DeliveryLog
	if !c.Enabled {
		return nil
	}
	lc := c.LogConfig()
	lc.Daemon, lc.Shard, lc.Logger, lc.Registerer = d.owner, d.ring.Shard, d.log.With("component", "delivery_log"), d.reg
	l, err := deliverylog.Open(lc)
	if err != nil {
		return fmt.Errorf("open delivery log: %w", err)
	}
	d.dlog, d.masker = l, c.Masker()
	target, err := c.ExportTarget()
	if err != nil {
		return fmt.Errorf("delivery log export: %w", err)
	}
	if target != nil {
		d.exporter, err = deliverylog.NewExporter(deliverylog.ExporterConfig{Dir: c.Dir, Target: target, RowGroupRows: c.Export.RowGroupRows,
			Logger: d.log.With("component", "delivery_log_export"), Registerer: d.reg})
		if err != nil {
			return err
		}
	}
	return nil
}

// outcomeSink is what channel name's pool reports to.
func (d *Daemon) outcomeSink(name string, now func() time.Time) channels.OutcomeSink {
	route := channels.OutcomeFunc(campaigns.RouteOutcomes)
	if d.dlog == nil {
		return route
	}
	return &OutcomeLogger{Log: d.dlog, Masker: d.masker, Channel: name, Now: now, Next: route}
}

// exportLoop runs the scheduled export until ctx ends.
func (d *Daemon) exportLoop(ctx context.Context) {
	every := time.Duration(d.cfg.DeliveryLog.Export.Interval)
	if d.exporter == nil || every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st, err := d.exporter.Export(ctx)
			if err != nil && ctx.Err() == nil {
				d.log.Error("export delivery log (retried next time)", "error", err)
			} else if st.Segments > 0 {
				d.log.Info("delivery log exported", "segments", st.Segments, "rows", st.Rows, "files", st.Files, "bytes", st.Bytes)
			}
		}
	}
}

// closeDeliveryLog seals the open segment at shutdown.
func (d *Daemon) closeDeliveryLog(ctx context.Context) error {
	if d.dlog == nil {
		return nil
	}
	return d.dlog.Close(ctx)
}

// messagesHandler serves GET /v1/messages?user=ID[&campaign=C][&limit=N]
// from the local segments.
func (d *Daemon) messagesHandler(w http.ResponseWriter, r *http.Request) {
	if d.dlog == nil {
		writeError(w, http.StatusNotFound, "", "the delivery log is not enabled on this daemon (delivery_log.enabled)")
		return
	}
	q := deliverylog.Query{UserID: r.URL.Query().Get("user"), Campaign: r.URL.Query().Get("campaign")}
	if q.UserID == "" {
		writeError(w, http.StatusBadRequest, "user", "user is required: GET /v1/messages?user=ID[&campaign=C]")
		return
	}
	if s := r.URL.Query().Get("limit"); s != "" {
		if _, err := fmt.Sscan(s, &q.Limit); err != nil || q.Limit < 1 {
			writeError(w, http.StatusBadRequest, "limit", "limit must be a positive integer")
			return
		}
	}
	res, err := deliverylog.Find(filepath.Clean(d.dlog.Dir()), q)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}
	if res.Records == nil {
		res.Records = []deliverylog.Record{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": messagesJSON(res.Records), "segments": res.Segments, "scanned": res.Scanned, "truncated": res.Truncated})
}

// MessageJSON is one record as the API and `notifyd log grep --json` show it.
type MessageJSON struct {
	MessageID    string `json:"message_id"`
	Event        string `json:"event"`
	Kind         string `json:"kind"`
	Campaign     string `json:"campaign_id"`
	Trigger      string `json:"trigger_id,omitempty"`
	UserID       string `json:"user_id"`
	Channel      string `json:"channel"`
	Address      string `json:"address,omitempty"`
	ProviderID   string `json:"provider_message_id,omitempty"`
	Outcome      string `json:"outcome"`
	Reason       string `json:"reason,omitempty"`
	ProviderCode string `json:"provider_code,omitempty"`
	Attempt      int32  `json:"attempt"`
	Locale       string `json:"locale,omitempty"`
	Link         string `json:"link,omitempty"`
	QueuedAt     string `json:"queued_at,omitempty"`
	SentAt       string `json:"sent_at,omitempty"`
	AnsweredAt   string `json:"answered_at"`
	Daemon       string `json:"daemon"`
	Shard        int32  `json:"shard"`
}

func messagesJSON(recs []deliverylog.Record) []MessageJSON {
	out := make([]MessageJSON, len(recs))
	ts := func(us int64) string {
		if us == 0 {
			return ""
		}
		return time.UnixMicro(us).UTC().Format(time.RFC3339Nano)
	}
	for i, r := range recs {
		out[i] = MessageJSON{MessageID: r.MessageID, Event: r.Event, Kind: r.Kind, Campaign: r.Campaign, Trigger: r.Trigger, UserID: r.UserID,
			Channel: r.Channel, Address: r.Address, ProviderID: r.ProviderID, Outcome: r.Outcome, Reason: r.Reason, ProviderCode: r.ProviderCode,
			Attempt: r.Attempt, Locale: r.Locale, Link: r.Link, QueuedAt: ts(r.QueuedAt), SentAt: ts(r.SentAt), AnsweredAt: ts(r.AnsweredAt),
			Daemon: r.Daemon, Shard: r.Shard}
	}
	return out
}

// MessagesJSON converts records for display (the CLI's --json).
func MessagesJSON(recs []deliverylog.Record) []MessageJSON { return messagesJSON(recs) }
