package h2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// peer is a scripted HTTP/2 server on a plaintext loopback connection, for
// what a real server cannot be made to do on cue: GOAWAY below streams in
// flight, REFUSED_STREAM, settings changes mid-connection, unanswered
// PINGs, protocol errors.
type peer struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	eb  bytes.Buffer
	dec *hpack.Decoder
}

// listen returns a Config dialling a loopback listener and a function that
// accepts the next connection as a peer sending settings.
func listen(t *testing.T) (Config, func(settings ...http2.Setting) *peer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	cfg := Config{
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		},
		Authority: "peer.test",
		Logger:    slog.New(slog.DiscardHandler),
	}
	accept := func(settings ...http2.Setting) *peer {
		t.Helper()
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
		p := &peer{t: t, nc: nc, fr: http2.NewFramer(nc, nc), dec: hpack.NewDecoder(4096, nil)}
		p.enc = hpack.NewEncoder(&p.eb)
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(nc, preface); err != nil || string(preface) != http2.ClientPreface {
			t.Fatalf("preface %q: %v", preface, err)
		}
		f := p.read()
		if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
			t.Fatalf("first frame %v, want SETTINGS", f)
		} else if v, _ := sf.Value(http2.SettingEnablePush); v != 0 {
			t.Fatal("client did not disable push")
		}
		if err := p.fr.WriteSettings(settings...); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return cfg, accept
}

// dialPeer dials and accepts in step.
func dialPeer(t *testing.T, cfg Config, accept func(...http2.Setting) *peer, settings ...http2.Setting) (*Conn, *peer) {
	t.Helper()
	type result struct {
		c   *Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := Dial(context.Background(), cfg)
		done <- result{c, err}
	}()
	p := accept(settings...)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { _ = r.c.Close() })
	return r.c, p
}

func (p *peer) read() http2.Frame {
	p.t.Helper()
	f, err := p.fr.ReadFrame()
	if err != nil {
		p.t.Fatalf("peer read: %v", err)
	}
	return f
}

// next reads frames until one for which keep is true; the others (window
// updates, settings acks) are skipped.
func (p *peer) next(keep func(http2.Frame) bool) http2.Frame {
	p.t.Helper()
	for {
		f := p.read()
		if h, ok := f.(*http2.HeadersFrame); ok {
			// Keep the decoder in step even for skipped blocks.
			if _, err := p.dec.DecodeFull(h.HeaderBlockFragment()); err != nil {
				p.t.Fatalf("peer decode: %v", err)
			}
		}
		if keep(f) {
			return f
		}
	}
}

// request reads the next request's HEADERS and returns its stream id and
// fields (single-frame header blocks only).
func (p *peer) request() (uint32, map[string]string) {
	p.t.Helper()
	var fields []hpack.HeaderField
	var id uint32
	for id == 0 {
		f := p.read()
		h, ok := f.(*http2.HeadersFrame)
		if !ok {
			continue
		}
		var err error
		if fields, err = p.dec.DecodeFull(h.HeaderBlockFragment()); err != nil {
			p.t.Fatalf("peer decode: %v", err)
		}
		id = h.StreamID
	}
	m := make(map[string]string, len(fields))
	for _, f := range fields {
		m[f.Name] = f.Value
	}
	return id, m
}

func (p *peer) respond(id uint32, status int, endStream bool, fields ...string) {
	p.t.Helper()
	p.eb.Reset()
	_ = p.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	for i := 0; i+1 < len(fields); i += 2 {
		_ = p.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.eb.Bytes(), EndHeaders: true, EndStream: endStream}); err != nil {
		p.t.Fatal(err)
	}
}

func roundTripAsync(c *Conn, req *Request) chan error {
	errc := make(chan error, 1)
	go func() {
		var resp Response
		errc <- c.RoundTrip(context.Background(), req, &resp)
	}()
	return errc
}

func TestGoAwayFailsStreamsAboveLastAsUnprocessed(t *testing.T) {
	cfg, accept := listen(t)
	c, p := dialPeer(t, cfg, accept)
	errs := make([]chan error, 3)
	ids := make([]uint32, 3)
	for i := range errs {
		errs[i] = roundTripAsync(c, post("/r"+strconv.Itoa(i), nil))
		ids[i], _ = p.request()
	}
	if ids[0] != 1 || ids[1] != 3 || ids[2] != 5 {
		t.Fatalf("stream ids %v, want 1 3 5", ids)
	}
	if err := p.fr.WriteGoAway(3, http2.ErrCodeNo, []byte(`{"reason":"Shutdown"}`)); err != nil {
		t.Fatal(err)
	}
	if err := <-errs[2]; !errors.Is(err, ErrUnprocessed) || !strings.Contains(err.Error(), "Shutdown") {
		t.Fatalf("stream above last-stream-id: %v, want ErrUnprocessed with the server's reason", err)
	}
	p.respond(1, 200, true)
	p.respond(3, 410, true)
	if err := <-errs[0]; err != nil {
		t.Fatalf("stream 1: %v", err)
	}
	if err := <-errs[1]; err != nil {
		t.Fatalf("stream 3: %v", err)
	}
	if c.Usable() {
		t.Fatal("usable after GOAWAY")
	}
	// Drained: the client hangs up.
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := p.fr.ReadFrame(); err != nil {
			break
		}
	}
}

func TestClientRetriesUnprocessed(t *testing.T) {
	tests := []struct {
		name    string
		refuse  func(p *peer, id uint32)
		newConn bool
	}{
		{"GOAWAY below the stream: on a new connection", func(p *peer, id uint32) { _ = p.fr.WriteGoAway(0, http2.ErrCodeNo, nil) }, true},
		{"REFUSED_STREAM: on the same connection", func(p *peer, id uint32) { _ = p.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, accept := listen(t)
			cl := NewClient(cfg)
			t.Cleanup(func() { _ = cl.Close() })
			errc := make(chan error, 1)
			var resp Response
			go func() { errc <- cl.RoundTrip(context.Background(), post("/once", []byte("body")), &resp) }()
			first := accept()
			id, _ := first.request()
			tc.refuse(first, id)
			second := first
			if tc.newConn {
				second = accept()
			}
			id2, fields := second.request()
			if fields[":path"] != "/once" || (!tc.newConn && id2 == id) {
				t.Fatalf("retried request: stream %d path %q", id2, fields[":path"])
			}
			d := second.next(func(f http2.Frame) bool {
				d, ok := f.(*http2.DataFrame)
				return ok && d.StreamID == id2
			}).(*http2.DataFrame)
			if string(d.Data()) != "body" || !d.StreamEnded() {
				t.Fatalf("retried body %q", d.Data())
			}
			second.respond(id2, 200, true, "apns-id", "retried")
			if err := <-errc; err != nil || resp.ID != "retried" {
				t.Fatalf("RoundTrip: %v %+v", err, resp)
			}
		})
	}
}

func TestUnprocessedIsRetriedOnlyOnce(t *testing.T) {
	cfg, accept := listen(t)
	cl := NewClient(cfg)
	t.Cleanup(func() { _ = cl.Close() })
	errc := make(chan error, 1)
	go func() {
		var resp Response
		errc <- cl.RoundTrip(context.Background(), post("/twice", nil), &resp)
	}()
	for range 2 {
		p := accept()
		p.request()
		_ = p.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}
	if err := <-errc; !errors.Is(err, ErrUnprocessed) {
		t.Fatalf("err = %v, want ErrUnprocessed after the second refusal", err)
	}
}

func TestSettingsChangesMidConnection(t *testing.T) {
	cfg, accept := listen(t)
	c, p := dialPeer(t, cfg, accept, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	body := bytes.Repeat([]byte("w"), 100)
	errc := roundTripAsync(c, post("/w", body))
	id, _ := p.request()
	d := p.next(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
	if len(d.Data()) != 10 || d.StreamEnded() {
		t.Fatalf("first DATA has %d bytes, want the 10 the window allows", len(d.Data()))
	}
	// Raising INITIAL_WINDOW_SIZE applies to the open stream.
	if err := p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 50}); err != nil {
		t.Fatal(err)
	}
	d = p.next(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
	if len(d.Data()) != 40 {
		t.Fatalf("after the settings change DATA has %d bytes, want 40", len(d.Data()))
	}
	if err := p.fr.WriteWindowUpdate(id, 1000); err != nil {
		t.Fatal(err)
	}
	d = p.next(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
	if len(d.Data()) != 50 || !d.StreamEnded() {
		t.Fatalf("last DATA has %d bytes (end %v), want the remaining 50", len(d.Data()), d.StreamEnded())
	}
	p.respond(id, 200, true)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	// MAX_CONCURRENT_STREAMS lowered to 1: a second request waits.
	if err := p.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1}); err != nil {
		t.Fatal(err)
	}
	p.next(func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() })
	e1 := roundTripAsync(c, post("/a", nil))
	id1, _ := p.request()
	e2 := roundTripAsync(c, post("/b", nil))
	eventually(t, "the second request to wait for a slot", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.slotQ.head != nil
	})
	p.respond(id1, 200, true)
	if err := <-e1; err != nil {
		t.Fatal(err)
	}
	id2, fields := p.request()
	if fields[":path"] != "/b" {
		t.Fatalf("second request path %q", fields[":path"])
	}
	p.respond(id2, 200, true)
	if err := <-e2; err != nil {
		t.Fatal(err)
	}

	// HEADER_TABLE_SIZE 0: the next header block opens with a size update
	// and indexes nothing; the peer's decoder follows.
	if err := p.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	p.next(func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() })
	p.dec.SetAllowedMaxDynamicTableSize(0)
	for i := range 3 {
		e := roundTripAsync(c, post("/t", nil, Field{Name: "authorization", Value: "bearer x"}, Field{Name: "apns-id", Value: strconv.Itoa(i), Unique: true}))
		id, fields := p.request()
		if fields["authorization"] != "bearer x" || fields["apns-id"] != strconv.Itoa(i) || fields[":authority"] != "peer.test" {
			t.Fatalf("request %d fields %v", i, fields)
		}
		p.respond(id, 200, true)
		if err := <-e; err != nil {
			t.Fatal(err)
		}
	}
}

func TestServerPingIsAnswered(t *testing.T) {
	cfg, accept := listen(t)
	_, p := dialPeer(t, cfg, accept)
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	if err := p.fr.WritePing(false, data); err != nil {
		t.Fatal(err)
	}
	f := p.next(func(f http2.Frame) bool { _, ok := f.(*http2.PingFrame); return ok }).(*http2.PingFrame)
	if !f.IsAck() || f.Data != data {
		t.Fatalf("got %v, want a PING ACK with the same data", f)
	}
}

func TestUnansweredHealthCheckClosesConnection(t *testing.T) {
	cfg, accept := listen(t)
	cfg.ReadIdleTimeout, cfg.PingTimeout = 30*time.Millisecond, 50*time.Millisecond
	c, p := dialPeer(t, cfg, accept)
	errc := roundTripAsync(c, post("/pending", nil))
	p.request()
	p.next(func(f http2.Frame) bool { pf, ok := f.(*http2.PingFrame); return ok && !pf.IsAck() })
	err := <-errc
	if err == nil || errors.Is(err, ErrUnprocessed) || !strings.Contains(err.Error(), "PING") {
		t.Fatalf("pending request: %v, want a connection-lost error naming the PING", err)
	}
	if c.Usable() {
		t.Fatal("connection still usable")
	}
}

func TestDataForCancelledStreamStillReplenishesWindow(t *testing.T) {
	cfg, accept := listen(t)
	cfg.ConnWindow = initialWindow
	c, p := dialPeer(t, cfg, accept, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		var resp Response
		errc <- c.RoundTrip(ctx, post("/gone", nil), &resp)
	}()
	id, _ := p.request()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	p.next(func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id && r.ErrCode == http2.ErrCodeCancel
	})
	// Frames already in flight for the cancelled stream: headers (which
	// must still be decoded) and 40000 bytes of DATA.
	p.respond(id, 200, false, "apns-id", "late")
	chunk := make([]byte, 10000)
	for range 4 {
		if err := p.fr.WriteData(id, false, chunk); err != nil {
			t.Fatal(err)
		}
	}
	wu := p.next(func(f http2.Frame) bool { w, ok := f.(*http2.WindowUpdateFrame); return ok && w.StreamID == 0 }).(*http2.WindowUpdateFrame)
	if wu.Increment < 30000 {
		t.Fatalf("connection WINDOW_UPDATE of %d, want the consumed bytes back", wu.Increment)
	}
	// HPACK is still in step: the next answer decodes.
	e := roundTripAsync(c, post("/next", nil))
	id2, _ := p.request()
	p.respond(id2, 200, true, "apns-id", "next")
	if err := <-e; err != nil {
		t.Fatal(err)
	}
}

func TestProtocolErrorsEndConnection(t *testing.T) {
	tests := []struct {
		name string
		act  func(p *peer, id uint32)
		code http2.ErrCode
	}{
		{"DATA on an idle stream", func(p *peer, id uint32) { _ = p.fr.WriteData(id+2, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"PUSH_PROMISE with push disabled", func(p *peer, id uint32) {
			_ = p.fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"connection window overflow", func(p *peer, id uint32) { _ = p.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl},
		{"garbage header block", func(p *peer, id uint32) {
			_ = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}, http2.ErrCodeCompression},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, accept := listen(t)
			c, p := dialPeer(t, cfg, accept)
			errc := roundTripAsync(c, post("/x", nil))
			id, _ := p.request()
			tc.act(p, id)
			ga := p.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
			if ga.ErrCode != tc.code {
				t.Fatalf("GOAWAY %v, want %v", ga.ErrCode, tc.code)
			}
			if err := <-errc; err == nil || errors.Is(err, ErrUnprocessed) {
				t.Fatalf("pending request: %v, want a transient failure", err)
			}
		})
	}
}

func TestStreamErrorsLeaveConnectionUp(t *testing.T) {
	tests := []struct {
		name string
		act  func(p *peer, id uint32)
		want string
	}{
		{"reset by server", func(p *peer, id uint32) { _ = p.fr.WriteRSTStream(id, http2.ErrCodeInternal) }, "INTERNAL_ERROR"},
		{"no :status", func(p *peer, id uint32) {
			p.eb.Reset()
			_ = p.enc.WriteField(hpack.HeaderField{Name: "apns-id", Value: "x"})
			_ = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.eb.Bytes(), EndHeaders: true, EndStream: true})
		}, ":status"},
		{"DATA before headers", func(p *peer, id uint32) { _ = p.fr.WriteData(id, true, []byte("x")) }, "DATA before"},
		{"informational then final", func(p *peer, id uint32) {
			p.respond(id, 100, false)
			p.respond(id, 200, true, "apns-id", "after-100")
		}, ""},
		{"trailers", func(p *peer, id uint32) {
			p.respond(id, 200, false, "apns-id", "with-trailers")
			_ = p.fr.WriteData(id, false, []byte("body"))
			p.eb.Reset()
			_ = p.enc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: "t"})
			_ = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.eb.Bytes(), EndHeaders: true, EndStream: true})
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, accept := listen(t)
			c, p := dialPeer(t, cfg, accept)
			errc := roundTripAsync(c, post("/x", nil))
			id, _ := p.request()
			tc.act(p, id)
			err := <-errc
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			e := roundTripAsync(c, post("/next", nil))
			id2, _ := p.request()
			p.respond(id2, 200, true)
			if err := <-e; err != nil {
				t.Fatalf("next request: %v", err)
			}
		})
	}
}

func TestRunningOutOfStreamIDs(t *testing.T) {
	cfg, accept := listen(t)
	c, p := dialPeer(t, cfg, accept)
	c.mu.Lock()
	c.nextID = maxStreamID // the last client stream id
	c.mu.Unlock()
	errc := roundTripAsync(c, post("/last", nil))
	id, _ := p.request()
	if id != maxStreamID {
		t.Fatalf("stream id %d", id)
	}
	p.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	if c.Usable() {
		t.Fatal("usable with no stream ids left")
	}
	var resp Response
	if err := c.RoundTrip(context.Background(), post("/more", nil), &resp); !errors.Is(err, ErrUnprocessed) {
		t.Fatalf("err = %v, want ErrUnprocessed", err)
	}
	p.respond(id, 200, true)
	if err := <-errc; err != nil {
		t.Fatalf("last stream: %v", err)
	}
}

func TestNeverIndexedLiteralsDecode(t *testing.T) {
	tests := []struct {
		name        string
		index       uint64
		field       string
		value       string
		wantSkipped bool
	}{
		{"path by static index", pathIndex, ":path", "/3/device/" + strings.Repeat("ab", 32), false},
		{"long value", pathIndex, ":path", "/" + strings.Repeat("x", 5000), false},
		{"literal name", 0, "apns-id", "2B0A6B0E-3C8A-4E4B-9E1A-5F1E0C9C0D11", false},
		{"long literal name", 0, strings.Repeat("n", 200), "v", false},
		{"empty value", 0, "apns-collapse-id", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.field
			if tc.index != 0 {
				name = ""
			}
			b := appendNeverIndexed(nil, tc.index, name, tc.value[:len(tc.value)/2], tc.value[len(tc.value)/2:])
			fields, err := hpack.NewDecoder(4096, nil).DecodeFull(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(fields) != 1 || fields[0].Name != tc.field || fields[0].Value != tc.value || !fields[0].Sensitive {
				t.Fatalf("decoded %+v", fields)
			}
		})
	}
}

func TestGroupWakesForAnyFinishedCalls(t *testing.T) {
	cfg, accept := listen(t)
	c, p := dialPeer(t, cfg, accept)
	g := NewGroup()
	reqs := make([]*Request, 4)
	calls := make([]*Call, 4)
	ids := make([]uint32, 4)
	for i := range calls {
		reqs[i] = post("/g"+strconv.Itoa(i), nil)
		reqs[i].Group = g
		var err error
		if calls[i], err = c.Start(context.Background(), reqs[i]); err != nil {
			t.Fatal(err)
		}
		ids[i], _ = p.request()
	}
	// Answer the newest two: a waiter for two wakes, though the oldest
	// is still pending.
	p.respond(ids[3], 200, true, "apns-id", "3")
	p.respond(ids[2], 200, true, "apns-id", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !(calls[2].Finished() && calls[3].Finished()) {
		if err := g.Wait(ctx, 2); err != nil {
			t.Fatalf("group wait: %v", err)
		}
	}
	if calls[0].Finished() || calls[1].Finished() {
		t.Fatal("unanswered calls report Finished")
	}
	for _, i := range []int{2, 3} {
		var resp Response
		if err := calls[i].Wait(context.Background(), &resp); err != nil || resp.ID != strconv.Itoa(i) {
			t.Fatalf("call %d: %v %q", i, err, resp.ID)
		}
	}
	if n := g.ready.Load(); n != 0 {
		t.Fatalf("group counts %d unwaited answers, want 0", n)
	}
	// A cancelled group wait returns ctx's error; the calls are still ours.
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if err := g.Wait(short, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("group wait with nothing answered: %v", err)
	}
	p.respond(ids[0], 200, true)
	p.respond(ids[1], 500, true)
	for _, i := range []int{0, 1} {
		var resp Response
		if err := calls[i].Wait(ctx, &resp); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := g.ready.Load(); n != 0 {
		t.Fatalf("group counts %d unwaited answers, want 0", n)
	}
}
