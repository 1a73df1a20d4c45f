package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"text/tabwriter"
	"time"

	"github.com/notifyd/notifyd/daemon"
	"github.com/notifyd/notifyd/store/deliverylog"
)

const logUsage = "usage: notifyd log export (--config FILE... | --dir LOGDIR --to DIR)\n       notifyd log grep --user ID [--campaign C] [--limit N] [--json] (--config FILE... | --dir LOGDIR)"

// runLog runs `notifyd log export` and `notifyd log grep` over a delivery
// log directory (docs/delivery-log.md).
func runLog(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, logUsage)
		return 2
	}
	switch args[0] {
	case "export":
		return runLogExport(args[1:], stdout, stderr)
	case "grep":
		return runLogGrep(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, logUsage)
		return 0
	}
	fmt.Fprintf(stderr, "notifyd log: unknown subcommand %q\n%s\n", args[0], logUsage)
	return 2
}

// logSettings reads the delivery_log section from --config, or takes --dir.
func logSettings(configs []string, dir string) (daemon.DeliveryLogConfig, error) {
	if len(configs) == 0 {
		if dir == "" {
			return daemon.DeliveryLogConfig{}, fmt.Errorf("give --config FILE or --dir LOGDIR")
		}
		return daemon.DeliveryLogConfig{Enabled: true, Dir: dir}, nil
	}
	cfg, err := daemon.LoadConfig(configs...)
	if err != nil {
		return daemon.DeliveryLogConfig{}, err
	}
	c := cfg.DeliveryLog
	if dir != "" {
		c.Dir = dir
	}
	if c.Dir == "" {
		return c, fmt.Errorf("the config has no delivery_log.dir")
	}
	return c, nil
}

func runLogExport(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("log export", "log export (--config FILE... | --dir LOGDIR --to DIR)", stderr)
	var configs listFlag
	fs.Var(&configs, "config", "daemon config file(s): delivery_log.dir and delivery_log.export say from where and to where (repeatable)")
	dir := fs.String("dir", "", "delivery log directory (overrides the config's)")
	to := fs.String("to", "", "export into this local directory (instead of the config's target)")
	if _, err := parseArgs(fs, args); err != nil {
		return exitCode(err)
	}
	c, err := logSettings(configs, *dir)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd log export: %v\n", err)
		return 2
	}
	var target deliverylog.Target = deliverylog.LocalTarget{Dir: *to}
	if *to == "" {
		if target, err = c.ExportTarget(); err != nil || target == nil {
			fmt.Fprintf(stderr, "notifyd log export: no target: give --to DIR or delivery_log.export.dir/s3 in the config (%v)\n", err)
			return 2
		}
	}
	// A daemon that is not running left its open segment behind: seal it
	// so it is exported too. A running daemon holds the lock; its open
	// segment waits for rotation.
	if sealed, err := deliverylog.SealIfUnlocked(c.Dir); err != nil {
		fmt.Fprintf(stderr, "notifyd log export: %v\n", err)
		return 1
	} else if !sealed {
		fmt.Fprintln(stderr, "a daemon is writing this log: exporting its closed segments (the open one follows once rotated)")
	}
	ex, err := deliverylog.NewExporter(deliverylog.ExporterConfig{Dir: c.Dir, Target: target, RowGroupRows: c.Export.RowGroupRows})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd log export: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	st, err := ex.Export(ctx)
	el := time.Since(start)
	fmt.Fprintf(stdout, "exported %d segments, %d rows into %d files (%d bytes) to %s in %s (%.0f rows/s)\n",
		st.Segments, st.Rows, st.Files, st.Bytes, target, el.Round(time.Millisecond), float64(st.Rows)/max(el.Seconds(), 1e-9))
	if st.Damaged > 0 {
		fmt.Fprintf(stdout, "%d segments ended in a torn or corrupt frame: what verified before it was exported\n", st.Damaged)
	}
	if err != nil {
		fmt.Fprintf(stderr, "notifyd log export: %v (re-run: exported segments are not exported twice)\n", err)
		return 1
	}
	return 0
}

func runLogGrep(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("log grep", "log grep --user ID [--campaign C] [--limit N] [--json] (--config FILE... | --dir LOGDIR)", stderr)
	var configs listFlag
	fs.Var(&configs, "config", "daemon config file(s): delivery_log.dir says where the log is (repeatable)")
	dir := fs.String("dir", "", "delivery log directory (overrides the config's)")
	user := fs.String("user", "", "user id (required)")
	campaign := fs.String("campaign", "", "only this campaign or flow")
	limit := newCountFlag(fs, "limit", 1000, false, "newest records to show")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args); err != nil {
		return exitCode(err)
	}
	if *user == "" {
		fmt.Fprintln(stderr, "notifyd log grep: --user is required")
		return 2
	}
	c, err := logSettings(configs, *dir)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd log grep: %v\n", err)
		return 2
	}
	res, err := deliverylog.Find(c.Dir, deliverylog.Query{UserID: *user, Campaign: *campaign, Limit: *limit})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd log grep: %v\n", err)
		return 1
	}
	msgs := daemon.MessagesJSON(res.Records)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"messages": msgs, "segments": res.Segments, "scanned": res.Scanned, "truncated": res.Truncated})
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ANSWERED\tCAMPAIGN\tCHANNEL\tOUTCOME\tREASON\tCODE\tATTEMPT\tPROVIDER ID\tMESSAGE")
	for _, m := range msgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", m.AnsweredAt, m.Campaign, m.Channel, m.Outcome, dash(m.Reason), dash(m.ProviderCode), m.Attempt, dash(m.ProviderID), m.MessageID)
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "%d records for user %s (%d segments, %d records scanned", len(msgs), *user, res.Segments, res.Scanned)
	if res.Truncated {
		fmt.Fprintf(stdout, "; only the newest %d", *limit)
	}
	fmt.Fprintln(stdout, ")")
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
