package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

// SinkEnv, set in a process's environment, makes ServeSinkIfAsked turn that
// process into a sink ("smtp" or "http") for the provider benchmarks. The
// benchmarks start their sink as a separate process (this binary, or the test
// binary, re-executed) so its CPU is not counted as notifyd's or the
// reference's.
const SinkEnv = "NOTIFYD_BENCH_SINK"

// ServeSinkIfAsked serves a sink and exits when SinkEnv is set; it returns
// at once otherwise. Call it first in main (and in TestMain).
func ServeSinkIfAsked() {
	kind := os.Getenv(SinkEnv)
	if kind == "" {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench sink: listen: %v\n", err)
		os.Exit(1)
	}
	switch kind {
	case "smtp":
		go serveSMTPSink(ln)
	case "http":
		go serveHTTPSink(ln)
	default:
		fmt.Fprintf(os.Stderr, "bench sink: unknown kind %q (smtp or http)\n", kind)
		os.Exit(2)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	// The parent holds our stdin: when it goes (exit or kill), so do we.
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// serveHTTPSink answers every request 200 with an empty body after reading
// it: the cheapest receiver net/http allows (HTTP/1.1 keep-alive).
func serveHTTPSink(ln net.Listener) {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header()["Content-Length"] = []string{"0"}
			w.WriteHeader(http.StatusOK)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	_ = srv.Serve(ln)
}

// serveSMTPSink is a minimal SMTP server in the spirit of Postfix's
// smtp-sink: it offers PIPELINING, answers every command at once, discards
// the message content and flushes its replies only when it has read all the
// client has sent so far (so pipelined commands get one write back).
func serveSMTPSink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go smtpSinkConn(c)
	}
}

func smtpSinkConn(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 4<<10)
	reply := func(s string) bool {
		_, _ = w.WriteString(s)
		if r.Buffered() == 0 {
			return w.Flush() == nil
		}
		return true
	}
	if !reply("220 notifyd-bench-sink ESMTP\r\n") {
		return
	}
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(string(bytes.TrimSpace(line[:min(len(line), 4)])))
		var ok bool
		switch cmd {
		case "EHLO":
			ok = reply("250-notifyd-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n")
		case "HELO", "MAIL", "RCPT", "RSET", "NOOP":
			ok = reply("250 2.0.0 Ok\r\n")
		case "DATA":
			if !reply("354 End data with <CR><LF>.<CR><LF>\r\n") {
				return
			}
			for {
				l, err := r.ReadSlice('\n')
				if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
					return
				}
				if err == nil && (string(l) == ".\r\n" || string(l) == ".\n") {
					break
				}
			}
			ok = reply("250 2.0.0 Ok: queued\r\n")
		case "QUIT":
			reply("221 2.0.0 Bye\r\n")
			_ = w.Flush()
			return
		default:
			ok = reply("502 5.5.2 Error: command not recognized\r\n")
		}
		if !ok {
			return
		}
	}
}

// sinkProcess is a sink running in a child process.
type sinkProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
	what  string
	wait  chan error
}

// startGoSink starts exe (this binary or the test binary) as a sink of kind.
func startGoSink(exe []string, kind string) (*sinkProcess, error) {
	if len(exe) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find own executable for the sink: %w", err)
		}
		exe = []string{self}
	}
	cmd := exec.Command(exe[0], exe[1:]...)
	cmd.Env = append(os.Environ(), SinkEnv+"="+kind)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s sink: %w", kind, err)
	}
	p := &sinkProcess{cmd: cmd, stdin: stdin, what: "notifyd's Go " + kind + " sink (pid " + fmt.Sprint(cmd.Process.Pid) + ")", wait: make(chan error, 1)}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		p.close()
		return nil, fmt.Errorf("start %s sink: it said %q (%v)", kind, line, err)
	}
	p.addr = addr
	go func() { p.wait <- cmd.Wait() }()
	return p, nil
}

// startSMTPSink starts Postfix's smtp-sink on a free loopback port.
func startSMTPSink(path string) (*sinkProcess, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + port
	args := []string{addr, "1024"}
	if os.Geteuid() == 0 {
		// smtp-sink refuses to run as root without a user to switch to.
		args = append([]string{"-u", "postfix"}, args...)
	}
	cmd := exec.Command(path, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start smtp-sink: %w", err)
	}
	p := &sinkProcess{cmd: cmd, stdin: stdin, addr: addr, what: "Postfix smtp-sink " + strings.Join(args, " "), wait: make(chan error, 1)}
	go func() { p.wait <- cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return p, nil
		}
		select {
		case err := <-p.wait:
			return nil, fmt.Errorf("smtp-sink exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			p.close()
			return nil, fmt.Errorf("smtp-sink did not listen on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

func (p *sinkProcess) close() {
	_ = p.stdin.Close()
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.wait:
	case <-time.After(5 * time.Second):
	}
}

// lookTool finds a reference tool on PATH or in /usr/sbin (Debian puts
// Postfix's tools there, outside a normal user's PATH).
func lookTool(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	p := "/usr/sbin/" + name
	if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return p, true
	}
	return "", false
}

// runTool runs a reference tool to completion and returns its wall time,
// its own CPU (the child's rusage) and its output.
func runTool(ctx context.Context, path string, args ...string) (time.Duration, time.Duration, []byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return 0, 0, out.Bytes(), fmt.Errorf("%s %s: %w: %s", path, strings.Join(args, " "), err, tail(out.String(), 400))
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), out.Bytes(), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
