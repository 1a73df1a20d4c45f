package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

// clientFlags are the flags of every admin API client subcommand.
type clientFlags struct {
	addr, tokenFile *string
	json            *bool
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	return clientFlags{
		addr:      fs.String("addr", envOr("NOTIFYD_ADDR", "http://127.0.0.1:8080"), "admin API base URL ($NOTIFYD_ADDR)"),
		tokenFile: fs.String("token-file", "", "file holding the bearer token (default: $NOTIFYD_ADMIN_TOKEN)"),
		json:      fs.Bool("json", false, "print the API's JSON answer (for scripts) instead of a table"),
	}
}

func (f clientFlags) client() (*apiClient, error) {
	token := os.Getenv("NOTIFYD_ADMIN_TOKEN")
	if *f.tokenFile != "" {
		b, err := os.ReadFile(*f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return &apiClient{base: strings.TrimRight(*f.addr, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// verb is one subcommand of an API client command.
type verb struct {
	args    string // positional synopsis
	summary string
	// flags adds the verb's own flags; run calls the API.
	flags func(fs *flag.FlagSet) func(ctx context.Context, c *apiClient, pos []string) ([]byte, error)
	// table prints a 2xx answer for people.
	table func(w io.Writer, body []byte) error
	nargs int
}

// runVerbs dispatches `notifyd NOUN VERB [args] [flags]`.
func runVerbs(noun string, verbs map[string]verb, order []string, args []string, stdout, stderr io.Writer) int {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: notifyd %s <verb> [arguments] [flags]\n\nverbs:\n", noun)
		for _, name := range order {
			v := verbs[name]
			fmt.Fprintf(w, "  %-28s %s\n", strings.TrimSpace(name+" "+v.args), v.summary)
		}
		fmt.Fprintf(w, "\n`notifyd %s VERB --help` lists a verb's flags.\n", noun)
	}
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	v, ok := verbs[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "notifyd %s: unknown verb %q\n", noun, args[0])
		usage(stderr)
		return 2
	}
	name := noun + " " + args[0]
	fs := newCommandFlags(name, strings.TrimSpace(name+" "+v.args+" [flags]")+"\n\n"+v.summary, stderr)
	call := v.flags(fs)
	cf := addClientFlags(fs)
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return exitCode(err)
	}
	if len(pos) != v.nargs {
		if v.nargs == 1 && len(pos) == 0 {
			fmt.Fprintf(stderr, "notifyd %s: missing ID\n", name)
		} else {
			fmt.Fprintf(stderr, "notifyd %s: want %d argument(s), got %q\n", name, v.nargs, pos)
		}
		return 2
	}
	c, err := cf.client()
	if err != nil {
		fmt.Fprintf(stderr, "notifyd %s: %v\n", name, err)
		return 1
	}
	out, err := call(context.Background(), c, pos)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "notifyd %s: %v\n", name, err)
			return 2
		}
		fmt.Fprintf(stderr, "notifyd %s: %v\n", name, err)
		return 1
	}
	if *cf.json || v.table == nil {
		_, _ = stdout.Write(out)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			fmt.Fprintln(stdout)
		}
		return 0
	}
	if err := v.table(stdout, out); err != nil {
		fmt.Fprintf(stderr, "notifyd %s: read answer: %v\n", name, err)
		return 1
	}
	return 0
}

// usageError is a mistake in the command line, not in the call (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// readBody reads -f FILE ("-": stdin).
func readBody(file string) ([]byte, error) {
	switch file {
	case "":
		return nil, usageError{"-f FILE is required"}
	case "-":
		return io.ReadAll(os.Stdin)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return b, nil
}

func createVerb(noun, path string) func(fs *flag.FlagSet) func(context.Context, *apiClient, []string) ([]byte, error) {
	return func(fs *flag.FlagSet) func(context.Context, *apiClient, []string) ([]byte, error) {
		file := fs.String("f", "", noun+" JSON file (\"-\": stdin); see examples/")
		return func(ctx context.Context, c *apiClient, _ []string) ([]byte, error) {
			body, err := readBody(*file)
			if err != nil {
				return nil, err
			}
			return c.do(ctx, http.MethodPost, path, body)
		}
	}
}

func idVerb(method, prefix, suffix string) func(fs *flag.FlagSet) func(context.Context, *apiClient, []string) ([]byte, error) {
	return func(fs *flag.FlagSet) func(context.Context, *apiClient, []string) ([]byte, error) {
		return func(ctx context.Context, c *apiClient, pos []string) ([]byte, error) {
			return c.do(ctx, method, prefix+url.PathEscape(pos[0])+suffix, nil)
		}
	}
}

var campaignOrder = []string{"create", "get", "list", "pause", "resume", "cancel", "retry-failed", "test-send"}

func campaignVerbs() map[string]verb {
	v := map[string]verb{
		"create":    {args: "-f FILE", summary: "create a campaign from a JSON file; idempotent on its id (--dry-run: report, store nothing)", flags: campaignCreateVerb, table: campaignCreateTable},
		"test-send": {args: "ID --users A,B", summary: "send a campaign's content now to named users", flags: campaignTestSendVerb, table: testSendTable, nargs: 1},
		"get":       {args: "ID", summary: "show a campaign's status and counts", flags: idVerb(http.MethodGet, "/v1/campaigns/", ""), table: campaignTable, nargs: 1},
		"list": {summary: "list campaigns, oldest first", table: campaignListTable, flags: func(fs *flag.FlagSet) func(context.Context, *apiClient, []string) ([]byte, error) {
			after := fs.String("after", "", "list campaigns after this id (the previous page's next)")
			limit := newCountFlag(fs, "limit", 100, false, "list at most this many (1..1000)")
			return func(ctx context.Context, c *apiClient, _ []string) ([]byte, error) {
				q := url.Values{"limit": {fmt.Sprint(*limit)}}
				if *after != "" {
					q.Set("after", *after)
				}
				return c.do(ctx, http.MethodGet, "/v1/campaigns?"+q.Encode(), nil)
			}
		}},
	}
	for _, a := range []string{"pause", "resume", "cancel", "retry-failed"} {
		v[a] = verb{args: "ID", summary: a + " a campaign", flags: idVerb(http.MethodPost, "/v1/campaigns/", "/"+a), table: campaignTable, nargs: 1}
	}
	return v
}

// runCampaign is the admin API client for campaigns.
func runCampaign(args []string, stdout, stderr io.Writer) int {
	return runVerbs("campaign", campaignVerbs(), campaignOrder, args, stdout, stderr)
}

var flowOrder = []string{"create", "get", "list", "pause", "resume", "delete"}

func flowVerbs() map[string]verb {
	return map[string]verb{
		"create": {args: "-f FILE", summary: "create or replace a flow from a JSON file", flags: createVerb("flow", "/v1/flows"), table: flowTable},
		"get":    {args: "ID", summary: "show a flow's status, triggers and counts", flags: idVerb(http.MethodGet, "/v1/flows/", ""), table: flowTable, nargs: 1},
		"list": {summary: "list flows", table: flowListTable, flags: func(fs *flag.FlagSet) func(context.Context, *apiClient, []string) ([]byte, error) {
			return func(ctx context.Context, c *apiClient, _ []string) ([]byte, error) {
				return c.do(ctx, http.MethodGet, "/v1/flows", nil)
			}
		}},
		"pause":  {args: "ID", summary: "pause a flow (triggers are refused while paused)", flags: idVerb(http.MethodPost, "/v1/flows/", "/pause"), table: flowTable, nargs: 1},
		"resume": {args: "ID", summary: "resume a paused flow", flags: idVerb(http.MethodPost, "/v1/flows/", "/resume"), table: flowTable, nargs: 1},
		"delete": {args: "ID", summary: "delete (cancel) a flow", flags: idVerb(http.MethodDelete, "/v1/flows/", ""), table: flowTable, nargs: 1},
	}
}

// runFlow is the admin API client for flows.
func runFlow(args []string, stdout, stderr io.Writer) int {
	return runVerbs("flow", flowVerbs(), flowOrder, args, stdout, stderr)
}

// runTrigger sends triggers: a file of one trigger or {"triggers": [...]},
// or one built from flags.
func runTrigger(args []string, stdout, stderr io.Writer) int {
	verbs := map[string]verb{"send": {args: "-f FILE | --user ID (--flow F | --event E)", summary: "fire triggers: a JSON file (one trigger or {\"triggers\": [...]}, at most 1,000) or one trigger from flags",
		table: triggerTable, flags: func(fs *flag.FlagSet) func(context.Context, *apiClient, []string) ([]byte, error) {
			file := fs.String("f", "", "triggers JSON file (\"-\": stdin); see examples/triggers.json")
			user := fs.String("user", "", "user id of a single trigger")
			flow := fs.String("flow", "", "flow id of a single trigger")
			event := fs.String("event", "", "event name of a single trigger")
			key := fs.String("idempotency-key", "", "idempotency key of a single trigger")
			return func(ctx context.Context, c *apiClient, _ []string) ([]byte, error) {
				var body []byte
				switch {
				case *file != "" && *user != "":
					return nil, usageError{"give -f FILE or --user, not both"}
				case *file != "":
					b, err := readBody(*file)
					if err != nil {
						return nil, err
					}
					body = b
				case *user != "":
					if *flow == "" && *event == "" {
						return nil, usageError{"--user needs --flow or --event"}
					}
					body, _ = json.Marshal(campaigns.Trigger{UserID: *user, Flow: *flow, Event: *event, IdempotencyKey: *key})
				default:
					return nil, usageError{"-f FILE or --user ID is required"}
				}
				return c.do(ctx, http.MethodPost, "/v1/triggers", body)
			}
		}}}
	return runVerbs("trigger", verbs, []string{"send"}, args, stdout, stderr)
}

// campaignTable prints one campaign.
func campaignTable(w io.Writer, body []byte) error {
	var st campaigns.CampaignStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\t%s\n", st.ID)
	if st.Name != "" {
		fmt.Fprintf(tw, "NAME\t%s\n", st.Name)
	}
	status := string(st.Status)
	if st.Reason != "" {
		status += " (" + st.Reason + ")"
	}
	fmt.Fprintf(tw, "STATUS\t%s\n", status)
	fmt.Fprintf(tw, "SEGMENT\t%s\n", st.Segment)
	fmt.Fprintf(tw, "CHANNELS\t%s\n", strings.Join(st.Channels, ", "))
	if st.SendAt != nil {
		fmt.Fprintf(tw, "SEND AT\t%s\n", st.SendAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "CREATED\t%s\n", st.Created.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "UPDATED\t%s\n", st.Updated.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "MESSAGES\t%d\n", total(st.Counts))
	printWaiting(tw, st.Waiting)
	if st.Failures > 0 {
		fmt.Fprintf(tw, "RETRYABLE FAILURES\t%d (notifyd campaign retry-failed %s)\n", st.Failures, st.ID)
	}
	if wn := st.Winner; wn != nil {
		line := wn.Phase + ", due " + wn.Due.UTC().Format(time.RFC3339)
		if wn.Variant != "" {
			line = fmt.Sprintf("%s sent as %s (%s)", wn.Variant, wn.Campaign, wn.Phase)
		}
		fmt.Fprintf(tw, "WINNER\t%s\n", line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Shards) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "SHARD\tSTATE\tMESSAGES\tOWNER\t")
		for _, s := range st.Shards {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t\n", s.Shard, s.State, s.Messages, s.Owner)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if err := countsTable(w, st.Channels, st.Counts); err != nil {
		return err
	}
	if err := variantTables(w, st.Channels, st.Variants); err != nil {
		return err
	}
	if len(st.Fallback) > 0 {
		// A fallback campaign: members who moved on from a step, by cause.
		fmt.Fprintln(w)
		fmt.Fprintln(w, "FALLBACKS (members moved on from a step to the next, by cause)")
		if err := countsTable(w, nil, st.Fallback); err != nil {
			return err
		}
	}
	if len(st.Engagement) == 0 {
		return nil
	}
	// What came back after sending: messages per event ("_total": every event).
	fmt.Fprintln(w)
	fmt.Fprintln(w, "ENGAGEMENT")
	return countsTable(w, st.Channels, st.Engagement)
}

// variantTables prints an A/B test's counts, one table per group.
func variantTables(w io.Writer, chans []string, variants map[string]map[string]map[string]int64) error {
	ids := make([]string, 0, len(variants))
	for v := range variants {
		ids = append(ids, v)
	}
	sort.Strings(ids)
	for _, v := range ids {
		fmt.Fprintf(w, "\nVARIANT %s", v)
		if err := countsTable(w, chans, variants[v]); err != nil {
			return err
		}
	}
	return nil
}

// countsTable prints messages per channel and outcome, channels as rows.
func countsTable(w io.Writer, chans []string, counts map[string]map[string]int64) error {
	if len(counts) == 0 {
		return nil
	}
	outcomes := map[string]bool{}
	for _, m := range counts {
		for k := range m {
			outcomes[k] = true
		}
	}
	cols := make([]string, 0, len(outcomes))
	for k := range outcomes {
		cols = append(cols, k)
	}
	sort.Slice(cols, func(i, j int) bool { // sent first, then by name
		if (cols[i] == "sent") != (cols[j] == "sent") {
			return cols[i] == "sent"
		}
		return cols[i] < cols[j]
	})
	rows := append([]string(nil), chans...)
	for ch := range counts {
		if !contains(rows, ch) {
			rows = append(rows, ch)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "CHANNEL\t")
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", strings.ToUpper(c))
	}
	fmt.Fprintln(tw)
	for _, ch := range rows {
		fmt.Fprintf(tw, "%s\t", ch)
		for _, c := range cols {
			fmt.Fprintf(tw, "%d\t", counts[ch][c])
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func total(counts map[string]map[string]int64) int64 {
	var n int64
	for _, m := range counts {
		for _, v := range m {
			n += v
		}
	}
	return n
}

// campaignListTable prints GET /v1/campaigns.
func campaignListTable(w io.Writer, body []byte) error {
	var list struct {
		Campaigns []campaigns.CampaignStatus `json:"campaigns"`
		Next      string                     `json:"next"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return err
	}
	if len(list.Campaigns) == 0 {
		fmt.Fprintln(w, "no campaigns")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tSEGMENT\tCHANNELS\tMESSAGES\tUPDATED")
	for _, st := range list.Campaigns {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", st.ID, st.Status, st.Segment, strings.Join(st.Channels, ","), total(st.Counts), st.Updated.UTC().Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if list.Next != "" {
		fmt.Fprintf(w, "more: notifyd campaign list --after %s\n", list.Next)
	}
	return nil
}

func flowTable(w io.Writer, body []byte) error {
	var st campaigns.FlowStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\t%s\n", st.ID)
	if st.Name != "" {
		fmt.Fprintf(tw, "NAME\t%s\n", st.Name)
	}
	fmt.Fprintf(tw, "STATUS\t%s\n", st.Status)
	fmt.Fprintf(tw, "TRIGGER\t%s\n", flowTrigger(st.Trigger))
	fmt.Fprintf(tw, "CHANNELS\t%s\n", strings.Join(st.Channels, ", "))
	fmt.Fprintf(tw, "TRIGGERS\t%d\n", st.Fired)
	fmt.Fprintf(tw, "MESSAGES\t%d\n", total(st.Counts))
	if err := tw.Flush(); err != nil {
		return err
	}
	return countsTable(w, st.Channels, st.Counts)
}

func flowTrigger(t campaigns.FlowTrigger) string {
	switch {
	case t.Segment != "" && t.Event != "":
		return "segment " + t.Segment + ", event " + t.Event
	case t.Segment != "":
		return "segment " + t.Segment
	}
	return "event " + t.Event
}

func flowListTable(w io.Writer, body []byte) error {
	var list struct {
		Flows []campaigns.FlowStatus `json:"flows"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return err
	}
	if len(list.Flows) == 0 {
		fmt.Fprintln(w, "no flows")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tTRIGGER\tCHANNELS\tTRIGGERS\tMESSAGES")
	for _, st := range list.Flows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", st.ID, st.Status, flowTrigger(st.Trigger), strings.Join(st.Channels, ","), st.Fired, total(st.Counts))
	}
	return tw.Flush()
}

func triggerTable(w io.Writer, body []byte) error {
	var res struct {
		Results []campaigns.TriggerResult `json:"results"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return err
	}
	byStatus := map[string]int{}
	for _, r := range res.Results {
		byStatus[r.Status]++
	}
	keys := make([]string, 0, len(byStatus))
	for k := range byStatus {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tSTATUS\tFLOWS")
	for i, r := range res.Results {
		fmt.Fprintf(tw, "%d\t%s\t%s\n", i+1, r.Status, strings.Join(r.Flows, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", byStatus[k], k)
	}
	fmt.Fprintf(w, "%d triggers: %s\n", len(res.Results), strings.Join(parts, ", "))
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

type apiClient struct {
	base, token string
	http        *http.Client
}

// do sends one request and returns the body of a 2xx answer; any other
// answer becomes an error carrying the API's JSON error.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("call admin API: %w", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read admin API answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, errors.New(resp.Status + ": " + apiErrorText(out))
	}
	return out, nil
}

// apiErrorText is the message of the API's JSON error ({"error": {"field",
// "message"}}) on one line, or the answer itself when it is not one.
func apiErrorText(body []byte) string {
	var e struct {
		Error struct {
			Field   string `json:"field"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
		return strings.TrimSpace(string(body))
	}
	if e.Error.Field != "" {
		return e.Error.Field + ": " + e.Error.Message
	}
	return e.Error.Message
}

// printWaiting shows what a campaign that runs in passes still holds back.
func printWaiting(tw io.Writer, w *campaigns.Waiting) {
	if w == nil || w.LocalTime+w.QuietHours == 0 {
		return
	}
	next := ""
	if w.NextDue != nil {
		next = ", next pass " + w.NextDue.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "WAITING\t%d members for their local time, %d for quiet hours to end%s\n", w.LocalTime, w.QuietHours, next)
}
