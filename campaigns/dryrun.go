package campaigns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/notifyd/notifyd/templates"
)

// ReasonWouldSend is a dry run's count of the messages a real run would hand
// to a provider (the real run counts them "sent" or by the provider's answer).
const ReasonWouldSend = "would_send"

// Preview and sample limits: a dry run answers an operator, not a bulk export.
const (
	DefaultPreviewSample = 3
	MaxPreviewSample     = 100
	// createSample is how many members Create renders before it accepts a
	// campaign: a template that fails for them would fail for many.
	createSample = 20
)

// DryRunOptions choose the members a dry run previews.
type DryRunOptions struct {
	// Sample previews the first Sample members of the segment in user-key
	// order (user keys are hashes, so that is a spread sample); 0 means
	// DefaultPreviewSample, at most MaxPreviewSample; with Users, no sample
	// is taken unless Sample is set.
	Sample int
	// Users previews these users (external ids) instead, members or not.
	Users []string
}

// DryRunReport is what a campaign would do now: the audience per channel
// and reason, and previews. Nothing is sent, claimed or recorded.
type DryRunReport struct {
	DryRun  bool   `json:"dry_run"`
	ID      string `json:"id"`
	Segment string `json:"segment"`
	// OK is whether Create would accept the campaign as it is.
	OK bool `json:"ok"`
	// Members is the segment's size on this daemon's shard.
	Members int64 `json:"members"`
	// Audience counts messages per channel and reason, exactly as the run's
	// status would count them, with "would_send" for what would be handed
	// to a provider.
	Audience map[string]map[string]int64 `json:"audience"`
	// Variants splits Audience by A/B group (variant id, or "holdout"),
	// then channel and reason; absent without an A/B test.
	Variants map[string]map[string]map[string]int64 `json:"variants,omitempty"`
	// At is the instant the policies were evaluated at (send_at when it is
	// in the future, else now).
	At time.Time `json:"evaluated_at"`
	// Waiting is, for a campaign with local_time or quiet_hours mode
	// "delay", the members whose pass comes after At (Audience counts them
	// as their pass would).
	Waiting  *Waiting  `json:"waiting,omitempty"`
	Previews []Preview `json:"previews"`
	// VariantPreviews previews, for each variant of an A/B test, the first
	// member of the segment (in user-key order) assigned to it.
	VariantPreviews []Preview     `json:"variant_previews,omitempty"`
	Errors          []DryRunError `json:"errors,omitempty"`
	Elapsed         Duration      `json:"elapsed"`
}

// DryRunError is a compile error or a render error met by the dry run.
type DryRunError struct {
	// Kind is "compile" or "render".
	Kind  string `json:"kind"`
	Field string `json:"field,omitempty"`
	User  string `json:"user,omitempty"`
	// Reason is the render failure's class (missing_variable, filter_error, ...).
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
	// Count is how many recipients failed the same way (render errors).
	Count int64 `json:"count,omitempty"`
}

// Preview is one member's messages as a run would make them now.
type Preview struct {
	User string `json:"user"`
	// Found is false for a named user who is not in the shard.
	Found  bool `json:"found"`
	Member bool `json:"in_segment"`
	// Variant is the member's A/B group (a variant id, or "holdout").
	Variant  string           `json:"variant,omitempty"`
	Channels []ChannelPreview `json:"channels,omitempty"`
}

// ChannelPreview is one channel of a Preview: a skip reason, or the
// rendered content and how many addresses it would go to.
type ChannelPreview struct {
	Channel   string `json:"channel"`
	Skip      string `json:"skip,omitempty"`
	Error     string `json:"error,omitempty"`
	Addresses int    `json:"addresses,omitempty"`
	Content   any    `json:"content,omitempty"`
	// Fallback: a later step of a fallback campaign, sent only if the
	// member's earlier step fails permanently; Content is what it would send.
	Fallback bool `json:"fallback,omitempty"`
}

// previewPush and its siblings are the rendered content as JSON.
type previewPush struct {
	Title      string          `json:"title,omitempty"`
	Body       string          `json:"body,omitempty"`
	Sound      string          `json:"sound,omitempty"`
	Badge      *int            `json:"badge,omitempty"`
	DeepLink   string          `json:"deep_link,omitempty"`
	Image      string          `json:"image,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
	CollapseID string          `json:"collapse_id,omitempty"`
	ThreadID   string          `json:"thread_id,omitempty"`
}

type previewMail struct {
	From            string            `json:"from,omitempty"`
	ReplyTo         string            `json:"reply_to,omitempty"`
	Subject         string            `json:"subject"`
	HTML            string            `json:"html,omitempty"`
	Text            string            `json:"text,omitempty"`
	Headers         map[string]string `json:"headers,omitempty"`
	ListUnsubscribe string            `json:"list_unsubscribe,omitempty"`
}

type previewText struct {
	Body     string `json:"body"`
	From     string `json:"from,omitempty"`
	Encoding string `json:"encoding"`
	Segments int    `json:"segments"`
}

type previewWebPush struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
	Icon  string `json:"icon,omitempty"`
	URL   string `json:"url,omitempty"`
	Tag   string `json:"tag,omitempty"`
}

type previewHook struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
}

// dryState collects what the stages of a dry run meet instead of logging it.
type dryState struct {
	mu      sync.Mutex
	renders map[string]*DryRunError // by channel + field + reason
	order   []string
	// last is the last render error per content block ("push"), for the
	// one-member batches of previews.
	last map[string]string
}

func (d *dryState) renderError(re *templates.RenderError, user, prefix string) {
	key := prefix + re.Channel + "." + re.Field + "/" + string(re.Reason)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.last[re.Channel] = re.Error()
	if e := d.renders[key]; e != nil {
		e.Count++
		return
	}
	d.renders[key] = &DryRunError{Kind: "render", Field: prefix + "content." + re.Channel + "." + re.Field, User: user,
		Reason: string(re.Reason), Message: re.Error(), Count: 1}
	d.order = append(d.order, key)
}

func (d *dryState) errors() []DryRunError {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]DryRunError, 0, len(d.order))
	for _, k := range d.order {
		out = append(out, *d.renders[k])
	}
	return out
}

// DryRun reports what creating the campaign in body would do, without
// storing, claiming, sending or recording anything. A body that does not
// decode or validate is an error, as for Create; template compile errors
// and render errors are in the report (OK false), so an operator sees all
// of them at once.
func (e *Engine) DryRun(ctx context.Context, body []byte, opts DryRunOptions) (DryRunReport, error) {
	start := time.Now()
	c, err := DecodeCampaign(body)
	if err != nil {
		return DryRunReport{}, err
	}
	if err := checkChannels(c.Channels, e.dispatch); err != nil {
		return DryRunReport{}, err
	}
	rep := DryRunReport{DryRun: true, ID: c.ID, Segment: c.Segment, Audience: map[string]map[string]int64{}, Previews: []Preview{}}
	rep.At = e.now()
	if c.SendAt != nil && c.SendAt.After(rep.At) {
		rep.At = *c.SendAt
	}
	set, err := c.CompileWithin(e.now, e.cfg.TemplateCeilings)
	if err != nil {
		rep.Errors = compileErrors(err)
		rep.Elapsed = Duration(time.Since(start))
		return rep, nil
	}
	r, dry := e.dryRun(c, set, rep.At)
	if r.ab != nil {
		rep.Variants = map[string]map[string]map[string]int64{}
	}
	if c.deferred() {
		if rep.Waiting, err = e.dryPasses(ctx, c, set, dry, &rep); err != nil {
			return DryRunReport{}, err
		}
	} else if rep.Members, err = r.countAudience(ctx, rep.Audience, rep.Variants); err != nil {
		return DryRunReport{}, err
	}
	if rep.Previews, err = r.previews(opts); err != nil {
		return DryRunReport{}, err
	}
	if rep.VariantPreviews, err = r.variantPreviews(); err != nil {
		return DryRunReport{}, err
	}
	rep.Errors = dry.errors()
	rep.OK = refusal(rep.Errors) == nil
	rep.Elapsed = Duration(time.Since(start))
	return rep, nil
}

// dryRun builds a run whose stages stop before dispatch, at instant at.
func (e *Engine) dryRun(c *Campaign, set *templates.Set, at time.Time) (*run, *dryState) {
	now := func() time.Time { return at }
	r := newRunFor(c, set, now, e.log, nil, e.source, e.cfg)
	dry := &dryState{renders: map[string]*DryRunError{}, last: map[string]string{}}
	r.dry = dry
	r.caps, r.capRules = e.caps, c.FrequencyCap.rules(e.capRules)
	return r, dry
}

// compileErrors lists each compile error of a joined Compile error.
func compileErrors(err error) []DryRunError {
	var out []DryRunError
	for _, err := range joinedLeaves(errors.Unwrap(err)) { // CompileWithin wraps the join
		var ce *templates.CompileError
		var fe *FieldError
		switch {
		case errors.As(err, &ce):
			out = append(out, DryRunError{Kind: "compile", Field: compileField(ce), Message: ce.Error()})
		case errors.As(err, &fe):
			out = append(out, DryRunError{Kind: "compile", Field: fe.Field, Message: fe.Msg})
		default:
			out = append(out, DryRunError{Kind: "compile", Message: err.Error()})
		}
	}
	if len(out) == 0 {
		out = append(out, DryRunError{Kind: "compile", Message: err.Error()})
	}
	return out
}

// compileField is a compile error's place in the request body.
func compileField(ce *templates.CompileError) string {
	f := "content"
	if ce.Locale != "" {
		f += ".locales." + ce.Locale
	}
	for _, p := range []string{ce.Channel, ce.Field} {
		if p != "" {
			f += "." + p
		}
	}
	return f
}

// refusal is the render error that makes Create refuse a campaign: any
// failure but a missing variable under missing "skip", which is the
// template's author asking to skip those recipients.
func refusal(errs []DryRunError) *FieldError {
	for _, e := range errs {
		if e.Kind == "compile" || e.Reason != string(templates.ReasonMissingVariable) {
			return &FieldError{Field: e.Field, Msg: fmt.Sprintf("%s (for user %s; a dry run lists every problem)", e.Message, e.User)}
		}
	}
	return nil
}

// dryStages are the stages a dry run runs on a batch: everything that
// decides a message's fate before a provider sees it.
func (r *run) dryStages() MultiStage {
	return MultiStage{
		StageFunc(resolveStage),
		StageFunc(layoutStage),
		StageFunc(deferStage),
		StageFunc(policyStage),
		StageFunc(capStage),
		StageFunc(renderStage),
	}
}

// countAudience runs the dry stages over the whole segment, a batch per
// worker on every core, and adds the counts to into, and to variants by
// A/B group (nil: not wanted).
func (r *run) countAudience(ctx context.Context, into map[string]map[string]int64, variants map[string]map[string]map[string]int64) (int64, error) {
	it, err := r.source.Members(r.c.Segment, 0, false)
	if errors.Is(err, ErrUnknownSegment) {
		return 0, &FieldError{Field: "segment", Msg: fmt.Sprintf("no segment %q in the shard", r.c.Segment)}
	}
	if err != nil {
		return 0, fmt.Errorf("open segment %q: %w", r.c.Segment, err)
	}
	// The members point into the generation the iterator pinned: it is
	// closed only after every worker is done.
	defer it.Close()
	workers := runtime.GOMAXPROCS(0)
	work := make(chan *RecipientBatch, workers)
	free := make(chan *RecipientBatch, 2*workers)
	for range 2 * workers {
		free <- &RecipientBatch{Members: make([]Member, r.cfg.BatchSize)}
	}
	var (
		mu      sync.Mutex
		members int64
		wg      sync.WaitGroup
		werr    error
	)
	stages := r.dryStages()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				err := stages.Exec(ctx, b)
				counts := b.takeCounts()
				sends := b.wouldSend()
				mu.Lock()
				if err != nil && werr == nil {
					werr = err
				}
				for _, c := range append(counts, sends...) {
					addCount(into, c)
					if variants != nil && c.Variant != "" && c.N != 0 {
						byCh := variants[c.Variant]
						if byCh == nil {
							byCh = map[string]map[string]int64{}
							variants[c.Variant] = byCh
						}
						addCount(byCh, c)
					}
				}
				mu.Unlock()
				b.Members = b.Members[:cap(b.Members)]
				free <- b
			}
		}()
	}
	var rerr error
	for ctx.Err() == nil {
		b := <-free
		n, err := r.next(it, b.Members)
		if err != nil {
			rerr = fmt.Errorf("read segment %q: %w", r.c.Segment, err)
			break
		}
		if n == 0 {
			break
		}
		b.Members = b.Members[:n]
		b.reset(r, n)
		members += int64(n)
		work <- b
	}
	close(work)
	wg.Wait()
	switch {
	case rerr != nil:
		return 0, rerr
	case werr != nil:
		return 0, werr
	case ctx.Err() != nil:
		return 0, ctx.Err()
	}
	return members, nil
}

func addCount(into map[string]map[string]int64, c Count) {
	if c.N == 0 {
		return
	}
	m := into[c.Channel]
	if m == nil {
		m = map[string]int64{}
		into[c.Channel] = m
	}
	m[c.Reason] += c.N
}

// wouldSend counts the messages the stages left for dispatch, per channel
// and A/B group.
func (b *RecipientBatch) wouldSend() []Count {
	n := map[countKey]int64{}
	unused := map[countKey]int64{}
	for p := range b.pos {
		ps := &b.pos[p]
		if ps.settled {
			continue
		}
		if ps.standby {
			// A fallback step the member's earlier step makes unneeded, if
			// that step is accepted (a provider's answer cannot be foreseen).
			for j := range ps.nenv {
				if !b.envs[ps.first+j].done {
					unused[countKey{ch: int8(p % b.nch()), variant: ps.variant}]++
				}
			}
			continue
		}
		for j := range ps.nenv {
			if !b.envs[ps.first+j].done {
				n[countKey{ch: int8(p % b.nch()), variant: ps.variant}]++
			}
		}
	}
	var out []Count
	for k, c := range unused {
		out = append(out, Count{Channel: b.run.channels[k.ch], Variant: b.run.ab.id(k.variant), Reason: ReasonFallbackUnused, N: c})
	}
	for k, c := range n {
		out = append(out, Count{Channel: b.run.channels[k.ch], Variant: b.run.ab.id(k.variant), Reason: ReasonWouldSend, N: c})
	}
	return out
}

// variantScan bounds how many members the dry run reads to find a member
// of each variant to preview: a variant of a tiny weight may have none
// among the first members, and the report must not read the whole shard
// twice for it.
const variantScan = 100_000

// variantPreviews previews, per variant, the first member of the segment
// assigned to it; a variant with no member among the first variantScan is
// left out.
func (r *run) variantPreviews() ([]Preview, error) {
	if r.ab == nil {
		return nil, nil
	}
	want := len(r.ab.ids) - 1
	if r.ab.hold != 0 {
		want--
	}
	found := make([]*Member, len(r.ab.ids))
	it, err := r.source.Members(r.c.Segment, 0, false)
	if err != nil {
		return nil, fmt.Errorf("open segment %q: %w", r.c.Segment, err)
	}
	defer it.Close()
	buf := make([]Member, 256)
	for read := 0; want > 0 && read < variantScan; {
		n, err := it.Next(buf)
		if err != nil {
			return nil, fmt.Errorf("read segment %q: %w", r.c.Segment, err)
		}
		if n == 0 {
			break
		}
		read += n
		for i := range n {
			v := r.ab.assign(buf[i].Key)
			if v == r.ab.hold || found[v] != nil {
				continue
			}
			m := buf[i]
			found[v] = &m
			want--
		}
		if want > 0 {
			buf = make([]Member, 256) // the found members keep pointing into this one
		}
	}
	var out []Preview
	for v := 1; v < len(found); v++ {
		if found[v] != nil {
			out = append(out, r.preview(found[v], true))
		}
	}
	return out, nil
}

// previews renders the chosen members one by one.
func (r *run) previews(opts DryRunOptions) ([]Preview, error) {
	sample := opts.Sample
	if sample == 0 && len(opts.Users) == 0 {
		sample = DefaultPreviewSample
	}
	sample = min(max(sample, 0), MaxPreviewSample)
	out := []Preview{}
	if sample > 0 {
		it, err := r.source.Members(r.c.Segment, 0, false)
		if err != nil {
			return nil, fmt.Errorf("open segment %q: %w", r.c.Segment, err)
		}
		buf := make([]Member, sample)
		n, err := it.Next(buf)
		if err == nil {
			for i := range n {
				out = append(out, r.preview(&buf[i], true))
			}
		}
		_ = it.Close()
		if err != nil {
			return nil, fmt.Errorf("read segment %q: %w", r.c.Segment, err)
		}
	}
	if len(opts.Users) == 0 {
		return out, nil
	}
	if len(opts.Users) > MaxPreviewSample {
		return nil, &FieldError{Field: "users", Msg: fmt.Sprintf("at most %d users", MaxPreviewSample)}
	}
	pin, err := r.source.Pin()
	if err != nil {
		return nil, fmt.Errorf("pin shard generation: %w", err)
	}
	defer pin.Close()
	for _, id := range opts.Users {
		var m Member
		ok, err := pin.LookupID(id, &m)
		if err != nil {
			return nil, fmt.Errorf("look up user %q: %w", id, err)
		}
		if !ok {
			out = append(out, Preview{User: id})
			continue
		}
		// Membership of a segment is not a lookup: a named user is
		// previewed as if a member, and says whether it is one.
		out = append(out, r.preview(&m, r.inSegment(m.Key)))
	}
	return out, nil
}

// inSegment reports whether key is a member of the campaign's segment.
func (r *run) inSegment(key uint64) bool {
	if key == 0 {
		return false
	}
	it, err := r.source.Members(r.c.Segment, key-1, true)
	if err != nil {
		return false
	}
	defer it.Close()
	var one [1]Member
	n, err := it.Next(one[:])
	return err == nil && n == 1 && one[0].Key == key
}

// preview runs the dry stages on one member in a batch of its own.
func (r *run) preview(m *Member, member bool) Preview {
	b := &RecipientBatch{Members: []Member{*m}}
	b.reset(r, 1)
	pv := Preview{User: m.ID, Found: true, Member: member}
	err := r.dryStages().Exec(context.Background(), b)
	if len(b.pos) > 0 {
		pv.Variant = r.ab.id(b.pos[0].variant)
	}
	if err != nil {
		for _, ch := range r.channels {
			pv.Channels = append(pv.Channels, ChannelPreview{Channel: ch, Error: err.Error()})
		}
		return pv
	}
	for c, ch := range r.channels {
		ps := &b.pos[c]
		cp := ChannelPreview{Channel: ch}
		switch {
		case ps.settled:
			cp.Skip = ps.reason
			if ps.reason == ReasonRenderError && r.dry != nil {
				r.dry.mu.Lock()
				cp.Error = r.dry.last[knownChannels[ch]]
				r.dry.mu.Unlock()
			}
		case ps.standby:
			cp.Fallback = true
			cp.Addresses = int(ps.nenv)
			if err := r.renderPosition(b, c); err != nil {
				cp.Error = err.Error()
			} else {
				cp.Content = previewContent(&b.envs[ps.first])
			}
		default:
			cp.Addresses = int(ps.nenv)
			cp.Content = previewContent(&b.envs[ps.first])
		}
		pv.Channels = append(pv.Channels, cp)
	}
	return pv
}

func previewContent(e *envelope) any {
	switch m := &e.msg; {
	case m.Push != nil:
		return previewPush{Title: m.Push.Title, Body: m.Push.Body, Sound: m.Push.Sound, Badge: m.Push.Badge,
			DeepLink: m.Push.DeepLink, Image: m.Push.ImageURL, Data: json.RawMessage(append([]byte(nil), m.Push.Data...)),
			CollapseID: m.Push.CollapseID, ThreadID: m.Push.ThreadID}
	case m.Mail != nil:
		return previewMail{From: m.Mail.From, ReplyTo: m.Mail.ReplyTo, Subject: m.Mail.Subject, HTML: m.Mail.HTML,
			Text: m.Mail.Text, Headers: m.Mail.Headers, ListUnsubscribe: m.Mail.ListUnsubscribe}
	case m.Text != nil:
		return previewText{Body: m.Text.Body, From: m.Text.From, Encoding: m.Text.Encoding, Segments: m.Text.Segments}
	case m.WebPush != nil:
		return previewWebPush{Title: m.WebPush.Title, Body: m.WebPush.Body, Icon: m.WebPush.Icon, URL: m.WebPush.URL, Tag: m.WebPush.Tag}
	case m.Hook != nil:
		return previewHook{Method: m.Hook.Method, URL: m.Hook.URL, Headers: m.Hook.Headers, Body: string(m.Hook.Body)}
	}
	return nil
}

// checkSample renders the campaign for the first members of its segment and
// refuses it when a render fails for a reason other than a missing
// variable under missing "skip": Create's guard against a template that
// compiles but cannot render (a filter applied to the wrong type, a badge
// that is not a number).
func (e *Engine) checkSample(c *Campaign, set *templates.Set) error {
	r, dry := e.dryRun(c, set, e.now())
	it, err := r.source.Members(c.Segment, 0, false)
	if err != nil {
		return nil // the segment check reports it
	}
	defer it.Close()
	buf := make([]Member, createSample)
	n, err := it.Next(buf)
	if err != nil {
		return fmt.Errorf("read segment %q: %w", c.Segment, err)
	}
	for i := range n {
		r.preview(&buf[i], true)
	}
	// Every variant's content is rendered for at least one of its members.
	if _, err := r.variantPreviews(); err != nil {
		return err
	}
	if fe := refusal(dry.errors()); fe != nil {
		return fe
	}
	return nil
}

// MaxTestSendUsers bounds a test send: it is for a human check.
const MaxTestSendUsers = 20

// TestSendResult is one named user's outcome per channel.
type TestSendResult struct {
	User     string            `json:"user"`
	Found    bool              `json:"found"`
	Channels map[string]string `json:"channels,omitempty"` // channel → "sent" or the reason
}

// TestSend sends a stored campaign's content now to named users (external
// ids) for a human check. Consent is honoured (an explicit "no" is never
// overridden); quiet hours, TTL and caps are not applied, nothing is
// counted in the campaign's status, and the messages carry their own
// idempotency scope, so a later real run still sends to these users.
func (e *Engine) TestSend(ctx context.Context, id string, users []string) ([]TestSendResult, error) {
	if len(users) == 0 || len(users) > MaxTestSendUsers {
		return nil, &FieldError{Field: "users", Msg: fmt.Sprintf("want 1 to %d user ids", MaxTestSendUsers)}
	}
	cc, err := e.load(ctx, id)
	if err != nil {
		return nil, err
	}
	pin, err := e.source.Pin()
	if err != nil {
		return nil, fmt.Errorf("pin shard generation: %w", err)
	}
	defer pin.Close()
	out := make([]TestSendResult, len(users))
	b := &RecipientBatch{}
	var idx []int
	scope := "test:" + id + ":" + time.Now().UTC().Format("20060102T150405.000000000")
	for i, u := range users {
		out[i].User = u
		var m Member
		ok, err := pin.LookupID(u, &m)
		if err != nil {
			return nil, fmt.Errorf("look up user %q: %w", u, err)
		}
		if !ok {
			continue
		}
		out[i].Found = true
		m.Scope = scope
		b.Members = append(b.Members, m)
		idx = append(idx, i)
	}
	if len(b.Members) == 0 {
		return out, nil
	}
	r := newRunFor(cc.c, cc.set, e.now, e.log, e.dispatch, e.source, e.cfg)
	b.reset(r, len(b.Members))
	b.fb = nil // a test send shows every channel's message, fallback or not
	if err := (MultiStage{StageFunc(resolveStage), StageFunc(layoutStage), StageFunc(renderStage)}).Exec(ctx, b); err != nil {
		return nil, err
	}
	b.remaining = b.open
	if b.open == 0 {
		b.closeDone()
	} else if err := dispatchStage(ctx, b); err != nil {
		b.abort()
		return nil, err
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, i := range idx {
		out[i].Channels = map[string]string{}
		for c, ch := range r.channels {
			ps := &b.pos[k*b.nch()+c]
			reason := ps.reason
			if reason == "" && ps.accepted {
				reason = ReasonSent
			}
			out[i].Channels[ch] = reason
		}
	}
	return out, nil
}
