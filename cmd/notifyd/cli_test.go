package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCLIArguments(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		code    int
		stdout  string
		stderr  string
		without string
	}{
		{name: "version", args: []string{"version"}, stdout: "notifyd "},
		{name: "--version", args: []string{"--version"}, stdout: "go1."},
		{name: "negative profiles", args: []string{"demo", "--profiles", "-5"}, code: 2, stderr: "must be at least 1"},
		{name: "campaign get help lists its flags only", args: []string{"campaign", "get", "--help"}, stdout: "-json", without: "-limit"},
		{name: "campaign list help", args: []string{"campaign", "list", "--help"}, stdout: "-limit"},
		{name: "campaign help", args: []string{"campaign", "--help"}, stdout: "retry-failed ID"},
		{name: "serve help", args: []string{"serve", "--help"}, stdout: "-config"},
		{name: "config help", args: []string{"config", "--help"}, stdout: "config check FILE"},
		{name: "flag after ID reaches the addr", args: []string{"campaign", "get", "x", "--addr", "http://127.0.0.1:1"}, code: 1, stderr: "127.0.0.1:1"},
		{name: "missing ID", args: []string{"campaign", "get", "--addr", "http://127.0.0.1:1"}, code: 2, stderr: "missing ID"},
		{name: "trigger without input", args: []string{"trigger", "send"}, code: 2, stderr: "-f FILE or --user ID is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errOut.String(), tc.stderr) ||
				(tc.without != "" && strings.Contains(errOut.String()+out.String(), tc.without)) {
				t.Errorf("notifyd %s: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s\nwant stdout %q, stderr %q, without %q",
					strings.Join(tc.args, " "), code, tc.code, out.String(), errOut.String(), tc.stdout, tc.stderr, tc.without)
			}
		})
	}
}
