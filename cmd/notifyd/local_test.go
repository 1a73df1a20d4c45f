package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

// TestLocalPathEndToEnd is README's local path: notifyd sandbox, notifyd
// serve --config examples/local.yaml --config DIR/notifyd-sandbox.yaml,
// notifyd campaign create -f examples/campaign.json; then the example flow
// and triggers. The campaign completes and what each fake received matches
// what the daemon counted as sent, once per address. No Redis, no secrets.
func TestLocalPathEndToEnd(t *testing.T) {
	dir := t.TempDir()
	sb, err := startSandbox(sandboxOptions{Dir: dir, Ports: map[string]int{}, Profiles: 300})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })

	// The example listens on 127.0.0.1:8080; a third file moves it to a
	// free port, as an operator would on a busy machine.
	addr := freeAddr(t)
	port := filepath.Join(dir, "port.yaml")
	writeFile(t, port, "admin:\n  listen: "+addr+"\n")
	cfg, chans, err := loadDaemon([]string{"../../examples/local.yaml", filepath.Join(dir, sandboxFragment), port}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("load examples/local.yaml with the sandbox's fragment: %v", err)
	}
	if cfg.Redis.Enabled() {
		t.Fatalf("examples/local.yaml enables Redis; the local path must not need it")
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, chans, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("serve did not stop within 30s of its context ending")
		}
	})

	cli := func(args ...string) string {
		t.Helper()
		args = append(args, "--addr", "http://"+addr, "--token-file", filepath.Join(dir, "admin-token"))
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 {
			t.Fatalf("notifyd %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		}
		return out.String()
	}
	pollCLI := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	pollCLI("daemon ready", func() bool {
		return run([]string{"health", "--addr", "http://" + addr, "--path", "/readyz"}, &bytes.Buffer{}, &bytes.Buffer{}) == 0
	})

	// A dry run first: the fakes see nothing, and its counts are the real run's.
	var dry campaigns.DryRunReport
	if err := json.Unmarshal([]byte(cli("campaign", "create", "-f", "../../examples/campaign.json", "--dry-run", "--json")), &dry); err != nil {
		t.Fatal(err)
	}
	if !dry.OK || dry.Members == 0 {
		t.Fatalf("dry run of the example: %+v", dry)
	}
	if table := cli("campaign", "create", "-f", "../../examples/campaign.json", "--dry-run", "--sample", "1"); !strings.Contains(table, "would be accepted") || !strings.Contains(table, "PREVIEW ") {
		t.Errorf("dry run table:\n%s", table)
	}
	for ch, g := range newSandboxClient(sb.ControlURL()).stats(t) {
		if g.Accepted != 0 {
			t.Fatalf("dry run: the %s fake accepted %d messages", ch, g.Accepted)
		}
	}
	cli("campaign", "create", "-f", "../../examples/campaign.json")
	var st campaigns.CampaignStatus
	pollCLI("example campaign completes", func() bool {
		if err := json.Unmarshal([]byte(cli("campaign", "get", "example-welcome", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.Status == campaigns.StatusCompleted
	})
	table := cli("campaign", "get", "example-welcome")
	if !strings.Contains(table, "STATUS    completed") {
		t.Errorf("campaign get table lacks the status:\n%s", table)
	}
	for ch, counts := range st.Counts {
		want := map[string]int64{}
		for reason, n := range dry.Audience[ch] {
			if reason == campaigns.ReasonWouldSend {
				reason = "sent"
			}
			want[reason] = n
		}
		if fmt.Sprint(want) != fmt.Sprint(counts) {
			t.Errorf("%s: dry run counted %v, the run %v", ch, want, counts)
		}
	}
	stats := newSandboxClient(sb.ControlURL()).stats(t)
	for _, ch := range tallyNames {
		sent := st.Counts[ch]["sent"]
		g := stats[ch]
		if sent == 0 || int64(g.Accepted) != sent || g.Duplicates != 0 {
			t.Errorf("%s: daemon counted %v; the fake accepted %d (%d duplicates), want every sent message once", ch, st.Counts[ch], g.Accepted, g.Duplicates)
		}
	}

	cli("flow", "create", "-f", "../../examples/flow.json")
	out := cli("trigger", "send", "-f", "../../examples/triggers.json")
	if !strings.Contains(out, "3 triggers: 3 accepted") {
		t.Errorf("trigger send:\n%s\nwant 3 accepted", out)
	}
	var fl campaigns.FlowStatus
	pollCLI("example flow sends", func() bool {
		if err := json.Unmarshal([]byte(cli("flow", "get", "example-cart-reminder", "--json")), &fl); err != nil {
			t.Fatal(err)
		}
		return fl.Counts["webhook"]["sent"] == 3 && fl.Counts["email"]["sent"] == 3
	})
	if st := newSandboxClient(sb.ControlURL()).stats(t); int64(st["webhook"].Accepted) != stats["webhook"].Accepted+3 {
		t.Errorf("webhook fake accepted %d after the triggers, want %d", st["webhook"].Accepted, stats["webhook"].Accepted+3)
	}
	if _, err := os.Stat("../../examples/local.yaml"); err != nil {
		t.Fatal(err)
	}
}
