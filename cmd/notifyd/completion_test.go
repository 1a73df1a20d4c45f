package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func completionScript(t *testing.T, shell string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run([]string{"completion", shell}, &out, &errOut); code != 0 {
		t.Fatalf("notifyd completion %s: exit %d: %s", shell, code, errOut.String())
	}
	path := filepath.Join(t.TempDir(), "notifyd."+shell)
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCompletionBash checks the script's syntax with bash -n, then sources
// it and calls its function the way bash does on TAB (COMP_WORDS,
// COMP_CWORD), comparing COMPREPLY exactly.
func TestCompletionBash(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	script := completionScript(t, "bash")
	if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	tests := []struct {
		line string // the command line up to the cursor
		want []string
	}{
		{"notifyd camp", []string{"campaign"}},
		{"notifyd c", []string{"campaign", "completion", "config"}},
		{"notifyd campaign re", []string{"resume", "retry-failed"}},
		{"notifyd campaign get --a", []string{"--addr"}},
		{"notifyd campaign get c1 --", []string{"--addr", "--json", "--token-file"}},
		{"notifyd campaign list --l", []string{"--limit"}},
		{"notifyd bench ", []string{"fanout", "dryrun", "fleet", "trigger", "email", "webhook", "apns"}},
		{"notifyd bench fanout --redis", []string{"--redis", "--redis-cluster"}},
		{"notifyd demo --pro", []string{"--profiles"}},
		{"notifyd trigger send -", []string{"--addr", "--event", "-f", "--flow", "--idempotency-key", "--json", "--token-file", "--user"}},
		{"notifyd completion ", []string{"bash", "zsh", "fish"}},
		{"notifyd version --", nil},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			words := strings.Fields(tc.line)
			if strings.HasSuffix(tc.line, " ") {
				words = append(words, "")
			}
			quoted := make([]string, len(words))
			for i, w := range words {
				quoted[i] = "'" + w + "'"
			}
			sim := "source " + script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" +
				strconv.Itoa(len(words)-1) + "\n_notifyd\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
			out, err := exec.Command("bash", "--norc", "--noprofile", "-c", sim).CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			got := strings.Fields(string(out))
			if !slices.Equal(got, tc.want) {
				t.Errorf("completing %q: got %q, want %q", tc.line, got, tc.want)
			}
		})
	}
}

// TestCompletionFish checks the fish script's syntax and, through fish's
// own completer (complete -C), that it completes a subcommand and a flag.
func TestCompletionFish(t *testing.T) {
	if _, err := exec.LookPath("fish"); err != nil {
		t.Skip("fish not installed")
	}
	script := completionScript(t, "fish")
	if out, err := exec.Command("fish", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("fish -n: %v\n%s", err, out)
	}
	tests := []struct{ line, want string }{
		{"notifyd campaign retry", "retry-failed\tretry-failed a campaign"},
		{"notifyd campaign list --lim", "--limit\tlist at most this many (1..1000) (default 100)"},
		{"notifyd sha", "shard\tbuild, generate and inspect shard files"},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			out, err := exec.Command("fish", "--no-config", "-c", "source "+script+"; complete -C '"+tc.line+"'").CombinedOutput()
			if err != nil {
				t.Fatalf("fish: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("completing %q: got %q, want %q", tc.line, got, tc.want)
			}
		})
	}
}

// TestCompletionZsh checks the zsh script's syntax (zsh -n).
func TestCompletionZsh(t *testing.T) {
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("zsh not installed")
	}
	script := completionScript(t, "zsh")
	if out, err := exec.Command("zsh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
}
