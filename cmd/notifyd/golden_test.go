package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

// update rewrites the golden files: go test ./cmd/notifyd -run Golden -update
var update = flag.Bool("update", false, "rewrite testdata/*/*.golden with the current output")

// checkGolden compares got with testdata/DIR/NAME.golden (or writes it with -update).
func checkGolden(t *testing.T, dir, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", dir, name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (create it with go test ./cmd/notifyd -run %s -update): %v", t.Name(), err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (if the change is intended: go test ./cmd/notifyd -run Golden -update)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

// checkNoStaleGolden fails on golden files no case wrote (a removed or
// renamed command); -update deletes them.
func checkNoStaleGolden(t *testing.T, dir string, names map[string]bool) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if names[strings.TrimSuffix(filepath.Base(f), ".golden")] {
			continue
		}
		if *update {
			_ = os.Remove(f)
			continue
		}
		t.Errorf("%s matches no case: remove it (or run with -update)", f)
	}
}

// goldenEnv clears the environment that flag defaults read, so help texts
// do not depend on the machine.
func goldenEnv(t *testing.T) {
	for _, k := range []string{"NOTIFYD_ADDR", "NOTIFYD_ADMIN_TOKEN", "REDIS_URL"} {
		t.Setenv(k, "")
	}
}

// TestGoldenHelp pins the help text of every command and subcommand.
func TestGoldenHelp(t *testing.T) {
	goldenEnv(t)
	names := map[string]bool{}
	for _, path := range append([][]string{{}}, commandPaths()...) {
		name := strings.Join(append([]string{"notifyd"}, path...), "_")
		names[name] = true
		t.Run(name, func(t *testing.T) {
			help, code := helpOf(path)
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
			checkGolden(t, "help", name, []byte(help))
		})
	}
	checkNoStaleGolden(t, "help", names)
}

// fakeAdmin is a test admin API: fixed answers built from the campaigns
// package's own types (so they cannot drift from what the daemon encodes),
// and a log of the requests the CLI made.
type fakeAdmin struct {
	mu  sync.Mutex
	log bytes.Buffer
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	fmt.Fprintf(&f.log, "> %s %s", r.Method, r.URL.RequestURI())
	if ct := r.Header.Get("Content-Type"); ct != "" {
		fmt.Fprintf(&f.log, " (%s)", ct)
	}
	if r.Header.Get("Authorization") == "Bearer golden-token" {
		fmt.Fprint(&f.log, " (bearer token)")
	}
	fmt.Fprintln(&f.log)
	if len(body) > 0 {
		var compact bytes.Buffer
		if err := json.Compact(&compact, body); err != nil {
			compact.Reset()
			compact.Write(body)
		}
		fmt.Fprintf(&f.log, "> %s\n", compact.Bytes())
	}
	f.mu.Unlock()

	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	switch p := r.Method + " " + r.URL.Path; p {
	case "POST /v1/campaigns":
		reply(http.StatusCreated, goldenCampaign(campaigns.StatusScheduled, false))
	case "GET /v1/campaigns/spring-sale":
		reply(http.StatusOK, goldenCampaign(campaigns.StatusRunning, true))
	case "POST /v1/campaigns/spring-sale/pause":
		reply(http.StatusOK, goldenCampaign(campaigns.StatusPaused, true))
	case "GET /v1/campaigns":
		if r.URL.Query().Get("after") != "" {
			reply(http.StatusOK, map[string]any{"campaigns": []campaigns.CampaignStatus{}})
			return
		}
		done := goldenCampaign(campaigns.StatusCompleted, false)
		done.ID, done.Segment = "welcome", "new-users"
		reply(http.StatusOK, map[string]any{"campaigns": []campaigns.CampaignStatus{done, goldenCampaign(campaigns.StatusRunning, true)}, "next": "spring-sale"})
	case "GET /v1/flows", "POST /v1/flows", "GET /v1/flows/cart-reminder", "POST /v1/flows/cart-reminder/pause":
		fl := campaigns.FlowStatus{ID: "cart-reminder", Name: "Cart reminder", Status: campaigns.StatusRunning,
			Trigger: campaigns.FlowTrigger{Event: "cart_abandoned"}, Channels: []string{"apns", "email"}, Fired: 1200,
			Counts: map[string]map[string]int64{"apns": {"sent": 700, "dead_address": 12}, "email": {"sent": 480, "suppressed": 8}}}
		switch {
		case strings.HasSuffix(p, "/pause"):
			fl.Status = campaigns.StatusPaused
		case p == "GET /v1/flows":
			other := campaigns.FlowStatus{ID: "vip-daily", Status: campaigns.StatusRunning, Trigger: campaigns.FlowTrigger{Segment: "vip"}, Channels: []string{"webhook"}}
			reply(http.StatusOK, map[string]any{"flows": []campaigns.FlowStatus{fl, other}})
			return
		case r.Method == http.MethodPost:
			fl.Fired, fl.Counts = 0, map[string]map[string]int64{}
		}
		reply(http.StatusOK, fl)
	case "POST /v1/triggers":
		shard := 2
		reply(http.StatusAccepted, map[string]any{"results": []campaigns.TriggerResult{
			{Status: "accepted", Flows: []string{"cart-reminder"}},
			{Status: "forwarded", Shard: &shard},
			{Status: "unknown_user"},
		}})
	default:
		reply(http.StatusNotFound, map[string]any{"error": map[string]string{"message": "not found: " + r.URL.Path}})
	}
}

func goldenCampaign(status campaigns.Status, progress bool) campaigns.CampaignStatus {
	created := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	st := campaigns.CampaignStatus{ID: "spring-sale", Name: "Spring sale", Status: status, Segment: "all",
		Channels: []string{"apns", "fcm", "email"}, Created: created, Updated: created.Add(90 * time.Second), Counts: map[string]map[string]int64{}}
	if status == campaigns.StatusScheduled {
		at := created.Add(time.Hour)
		st.SendAt = &at
	}
	if progress {
		st.Counts = map[string]map[string]int64{
			"apns":  {"sent": 41_000, "dead_address": 250, "retryable": 12},
			"fcm":   {"sent": 38_500, "invalid": 3},
			"email": {"sent": 40_120, "suppressed": 77},
		}
		st.Failures = 12
		st.Ring = "3:2"
		st.Shards = []campaigns.ShardProgress{{Shard: 0, State: "running", Owner: "notifyd-0", Messages: 80_000}, {Shard: 1, State: "waiting"}}
	}
	if status == campaigns.StatusCompleted {
		st.Channels = []string{"webhook"}
		st.Counts = map[string]map[string]int64{"webhook": {"sent": 5}}
	}
	return st
}

// TestGoldenAdminClient pins what the API client commands send and print,
// tables and --json, against a test admin server.
func TestGoldenAdminClient(t *testing.T) {
	goldenEnv(t)
	t.Setenv("NOTIFYD_ADMIN_TOKEN", "golden-token")
	fake := &fakeAdmin{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	tests := []struct {
		name string
		args []string
	}{
		{"campaign_create", []string{"campaign", "create", "-f", "../../examples/campaign.json"}},
		{"campaign_get", []string{"campaign", "get", "spring-sale"}},
		{"campaign_get_json", []string{"campaign", "get", "spring-sale", "--json"}},
		{"campaign_get_missing", []string{"campaign", "get", "no-such"}},
		{"campaign_list", []string{"campaign", "list", "--limit", "2"}},
		{"campaign_list_empty", []string{"campaign", "list", "--after", "spring-sale"}},
		{"campaign_pause", []string{"campaign", "pause", "spring-sale"}},
		{"flow_create", []string{"flow", "create", "-f", "../../examples/flow.json"}},
		{"flow_get", []string{"flow", "get", "cart-reminder"}},
		{"flow_list", []string{"flow", "list"}},
		{"flow_list_json", []string{"flow", "list", "--json"}},
		{"flow_pause", []string{"flow", "pause", "cart-reminder"}},
		{"trigger_send_file", []string{"trigger", "send", "-f", "../../examples/triggers.json"}},
		{"trigger_send_flags", []string{"trigger", "send", "--user", "u-1", "--flow", "cart-reminder", "--idempotency-key", "k1"}},
	}
	names := map[string]bool{}
	for _, tc := range tests {
		names[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			fake.mu.Lock()
			fake.log.Reset()
			fake.mu.Unlock()
			var out, errOut bytes.Buffer
			code := run(append(tc.args, "--addr", srv.URL), &out, &errOut)
			fake.mu.Lock()
			got := fmt.Sprintf("$ notifyd %s\n%sexit %d\n--- stdout\n%s--- stderr\n%s",
				strings.Join(tc.args, " "), fake.log.String(), code, out.String(), strings.ReplaceAll(errOut.String(), srv.URL, "ADDR"))
			fake.mu.Unlock()
			checkGolden(t, "admin", tc.name, []byte(got))
		})
	}
	checkNoStaleGolden(t, "admin", names)
}
