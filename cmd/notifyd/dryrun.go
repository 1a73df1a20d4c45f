package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/notifyd/notifyd/campaigns"
)

// campaignCreateVerb is `campaign create -f FILE [--dry-run [--sample N] [--users a,b]]`.
func campaignCreateVerb(fs *flag.FlagSet) func(context.Context, *apiClient, []string) ([]byte, error) {
	file := fs.String("f", "", "campaign JSON file (\"-\": stdin); see examples/")
	dry := fs.Bool("dry-run", false, "store and send nothing: print the audience per channel and reason, previews and template errors")
	sample := fs.Int("sample", -1, "with --dry-run: preview the first N members (0-100; default 3)")
	users := fs.String("users", "", "with --dry-run: preview these user ids (comma-separated)")
	return func(ctx context.Context, c *apiClient, _ []string) ([]byte, error) {
		body, err := readBody(*file)
		if err != nil {
			return nil, err
		}
		if !*dry {
			if *sample >= 0 || *users != "" {
				return nil, usageError{"--sample and --users need --dry-run"}
			}
			return c.do(ctx, http.MethodPost, "/v1/campaigns", body)
		}
		q := url.Values{"dry_run": {"true"}}
		if *sample >= 0 {
			q.Set("sample", fmt.Sprint(*sample))
		}
		if *users != "" {
			q.Set("users", *users)
		}
		return c.do(ctx, http.MethodPost, "/v1/campaigns?"+q.Encode(), body)
	}
}

// campaignCreateTable prints a created campaign, or a dry run's report.
func campaignCreateTable(w io.Writer, body []byte) error {
	var probe struct {
		DryRun bool `json:"dry_run"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return err
	}
	if !probe.DryRun {
		return campaignTable(w, body)
	}
	var rep campaigns.DryRunReport
	if err := json.Unmarshal(body, &rep); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "DRY RUN\t%s (nothing stored or sent)\n", rep.ID)
	verdict := "would be accepted"
	if !rep.OK {
		verdict = "would be REFUSED (see errors)"
	}
	fmt.Fprintf(tw, "CREATE\t%s\n", verdict)
	fmt.Fprintf(tw, "SEGMENT\t%s (%d members on this shard)\n", rep.Segment, rep.Members)
	fmt.Fprintf(tw, "EVALUATED AT\t%s\n", rep.At.UTC().Format("2006-01-02T15:04:05Z"))
	printWaiting(tw, rep.Waiting)
	if err := tw.Flush(); err != nil {
		return err
	}
	var chans []string
	for ch := range rep.Audience {
		chans = append(chans, ch)
	}
	if err := countsTable(w, chans, rep.Audience); err != nil {
		return err
	}
	if len(rep.Errors) > 0 {
		fmt.Fprintln(w, "\nERRORS")
		for _, e := range rep.Errors {
			line := "  " + e.Kind + " " + e.Field + ": " + e.Message
			if e.Count > 0 {
				line += fmt.Sprintf(" (%d recipients, e.g. %s)", e.Count, e.User)
			}
			fmt.Fprintln(w, line)
		}
	}
	for _, p := range rep.Previews {
		fmt.Fprintf(w, "\nPREVIEW %s", p.User)
		if !p.Found {
			fmt.Fprintln(w, ": not in the shard")
			continue
		}
		if !p.Member {
			fmt.Fprint(w, " (not in the segment)")
		}
		fmt.Fprintln(w)
		for _, c := range p.Channels {
			switch {
			case c.Skip != "":
				fmt.Fprintf(w, "  %s: skipped, %s %s\n", c.Channel, c.Skip, c.Error)
			default:
				b, _ := json.Marshal(c.Content)
				fmt.Fprintf(w, "  %s (%d address(es)): %s\n", c.Channel, c.Addresses, strings.TrimSpace(string(b)))
			}
		}
	}
	return nil
}

// campaignTestSendVerb is `campaign test-send ID --users a,b`.
func campaignTestSendVerb(fs *flag.FlagSet) func(context.Context, *apiClient, []string) ([]byte, error) {
	users := fs.String("users", "", "user ids to send to (comma-separated, at most 20)")
	return func(ctx context.Context, c *apiClient, pos []string) ([]byte, error) {
		if *users == "" {
			return nil, usageError{"--users is required"}
		}
		body, err := json.Marshal(map[string][]string{"users": strings.Split(*users, ",")})
		if err != nil {
			return nil, err
		}
		return c.do(ctx, http.MethodPost, "/v1/campaigns/"+url.PathEscape(pos[0])+"/test-send", body)
	}
}

func testSendTable(w io.Writer, body []byte) error {
	var res struct {
		Results []campaigns.TestSendResult `json:"results"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tCHANNEL\tRESULT")
	for _, r := range res.Results {
		if !r.Found {
			fmt.Fprintf(tw, "%s\t-\tnot in the shard\n", r.User)
			continue
		}
		for ch, out := range r.Channels {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.User, ch, out)
		}
	}
	return tw.Flush()
}
