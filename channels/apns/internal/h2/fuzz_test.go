package h2

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serverBytes builds a seed: what a server might send after the preface.
func serverBytes(write func(fr *http2.Framer, enc func(fields ...string) []byte)) []byte {
	var out, hb bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	he := hpack.NewEncoder(&hb)
	enc := func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			_ = he.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	write(fr, enc)
	return out.Bytes()
}

// FuzzServerFrames plays arbitrary bytes as the server's side of a
// connection (frames, HPACK blocks, SETTINGS, GOAWAY, whatever the network
// delivers) while a request is in flight: the client must neither panic nor
// hang. Dial, the request and Close each end within their deadlines.
func FuzzServerFrames(f *testing.F) {
	settings := func(fr *http2.Framer) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
		_ = fr.WriteSettingsAck()
	}
	seeds := [][]byte{
		serverBytes(func(fr *http2.Framer, enc func(...string) []byte) {
			settings(fr)
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "200", "apns-id", "x"), EndHeaders: true, EndStream: true})
		}),
		serverBytes(func(fr *http2.Framer, enc func(...string) []byte) {
			settings(fr)
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "400"), EndHeaders: true})
			_ = fr.WriteData(1, true, []byte(`{"reason":"BadDeviceToken"}`))
		}),
		serverBytes(func(fr *http2.Framer, enc func(...string) []byte) {
			settings(fr)
			b := enc(":status", "200", "apns-unique-id", "0123456789")
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:2], EndStream: true})
			_ = fr.WriteContinuation(1, true, b[2:])
		}),
		serverBytes(func(fr *http2.Framer, enc func(...string) []byte) {
			settings(fr)
			_ = fr.WriteGoAway(0, http2.ErrCodeProtocol, []byte("bye"))
		}),
		serverBytes(func(fr *http2.Framer, enc func(...string) []byte) {
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1})
			_ = fr.WriteWindowUpdate(0, 1<<31-1)
			_ = fr.WriteWindowUpdate(1, 1<<31-1)
			_ = fr.WritePing(false, [8]byte{1})
			_ = fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
		}),
		serverBytes(func(fr *http2.Framer, enc func(...string) []byte) {
			settings(fr)
			_ = fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: enc(":path", "/"), EndHeaders: true})
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: []byte{0xff, 0xff, 0xff}, EndHeaders: true})
		}),
		{},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, server []byte) {
		cli, srv := net.Pipe()
		go func() {
			defer srv.Close()
			go io.Copy(io.Discard, srv) //nolint:errcheck // the client's frames are not the subject
			_, _ = srv.Write(server)
		}()
		cfg := Config{
			Dial:         func(context.Context) (net.Conn, error) { return cli, nil },
			Authority:    "fuzz.test",
			DialTimeout:  time.Second,
			CloseTimeout: 100 * time.Millisecond,
			Logger:       slog.New(slog.DiscardHandler),
		}
		start := time.Now()
		c, err := Dial(context.Background(), cfg)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		var resp Response
		_ = c.RoundTrip(ctx, post("/3/device/abc", []byte(`{"aps":{}}`)), &resp)
		cancel()
		_ = c.Close()
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("client took %v against %d server bytes", d, len(server))
		}
	})
}
