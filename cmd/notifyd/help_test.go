package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestHelpEveryCommand walks every command and subcommand of the command
// table: --help (and -h) exits 0, prints the usage on stdout and nothing on
// stderr, names the command, and a command's help lists every subcommand
// the tree (and so completion) knows for it.
func TestHelpEveryCommand(t *testing.T) {
	paths := append([][]string{{}}, commandPaths()...)
	for _, path := range paths {
		for _, h := range []string{"--help", "-h"} {
			name := strings.Join(append(append([]string{"notifyd"}, path...), h), " ")
			t.Run(name, func(t *testing.T) {
				var out, errOut bytes.Buffer
				code := run(append(append([]string(nil), path...), h), &out, &errOut)
				if code != 0 || errOut.Len() != 0 {
					t.Fatalf("%s: exit %d (want 0), stderr:\n%s", name, code, errOut.String())
				}
				// The usage names the command and the subcommand (some
				// share one synopsis: "completion bash|zsh|fish").
				want := append([]string{"usage:", "notifyd " + strings.Join(path[:min(len(path), 1)], "")}, path...)
				for _, w := range want {
					if !strings.Contains(out.String(), w) || !strings.HasPrefix(out.String(), "usage:") {
						t.Fatalf("%s: stdout does not start with usage: or does not contain %q:\n%s", name, w, out.String())
					}
				}
				if len(path) == 1 {
					for _, sub := range subcommands(path[0]) {
						if !strings.Contains(out.String(), sub) {
							t.Errorf("%s: help does not mention subcommand %q:\n%s", name, sub, out.String())
						}
					}
				}
			})
		}
	}
}

// TestHelpListsOnlyItsFlags pins, for commands sharing code, that a
// subcommand's help lists its own flags and none of its siblings'.
func TestHelpListsOnlyItsFlags(t *testing.T) {
	tests := []struct {
		path          []string
		want, without []string
	}{
		{[]string{"campaign", "get"}, []string{"addr", "json", "token-file"}, []string{"limit", "after", "f"}},
		{[]string{"campaign", "list"}, []string{"limit", "after", "addr"}, []string{"f"}},
		{[]string{"campaign", "create"}, []string{"f", "addr"}, []string{"limit"}},
		{[]string{"trigger", "send"}, []string{"f", "user", "flow", "event", "idempotency-key"}, []string{"limit"}},
		{[]string{"bench", "fanout"}, []string{"members", "compare", "redis-cluster"}, []string{"rate", "shards", "reference"}},
		{[]string{"bench", "trigger"}, []string{"rate", "duration", "shards"}, []string{"compare", "reference"}},
		{[]string{"bench", "fleet"}, []string{"shards"}, []string{"rate", "compare"}},
		{[]string{"shard", "inspect"}, []string{"json", "rows"}, []string{"profiles", "shard-id"}},
		{[]string{"shard", "build"}, []string{"profiles", "shard-id", "block-rows"}, []string{"rows", "seed"}},
		{[]string{"health"}, []string{"addr", "path"}, []string{"json", "token-file"}},
		{[]string{"version"}, nil, []string{"addr"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.path, " "), func(t *testing.T) {
			got := map[string]bool{}
			for _, f := range flagsOf(tc.path) {
				if got[f.name] {
					t.Errorf("flag -%s listed twice", f.name)
				}
				got[f.name] = true
			}
			for _, f := range tc.want {
				if !got[f] {
					t.Errorf("help does not list -%s (lists %v)", f, got)
				}
			}
			for _, f := range tc.without {
				if got[f] {
					t.Errorf("help lists -%s, which does not apply", f)
				}
			}
		})
	}
}

func TestHelpAndUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no command", nil, 2, "", "usage: notifyd <command>"},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"help COMMAND", []string{"help", "campaign", "list"}, 0, "-limit", ""},
		{"help", []string{"help"}, 0, "completion", ""},
		{"bench without scenario", []string{"bench"}, 2, "", "usage: notifyd bench fanout"},
		{"unknown bench flag", []string{"bench", "fleet", "--nope"}, 2, "", "flag provided but not defined: -nope"},
		{"--help after --", []string{"config", "check", "--", "--help"}, 1, "", "--help"},
		{"completion without shell", []string{"completion"}, 2, "", "usage: notifyd completion"},
		{"completion unknown shell", []string{"completion", "tcsh"}, 2, "", `unknown shell "tcsh"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errOut.String(), tc.stderr) {
				t.Errorf("notifyd %s: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s\nwant stdout %q, stderr %q",
					strings.Join(tc.args, " "), code, tc.code, out.String(), errOut.String(), tc.stdout, tc.stderr)
			}
		})
	}
}
