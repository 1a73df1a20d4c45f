package apns

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

func tlsPipe(t *testing.T) (client *tls.Conn, server *tls.Conn) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"pipe"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	a, b := net.Pipe()
	server = tls.Server(b, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	client = tls.Client(a, &tls.Config{RootCAs: pool, ServerName: "pipe"})
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return client, server
}

func TestCoalescingConn(t *testing.T) {
	tests := []struct {
		name   string
		writes int
		size   int
	}{
		{"many small frames arrive in order", 2000, 37},
		{"writes larger than the buffer bound", 3, maxPending + 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tlsPipe(t)
			c := newCoalescingConn(client)
			var want bytes.Buffer
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(io.LimitReader(server, int64(tc.writes*tc.size)))
				got <- b
				_, _ = io.Copy(io.Discard, server) // the close_notify
			}()
			for i := range tc.writes {
				p := bytes.Repeat([]byte{byte('a' + i%26)}, tc.size)
				copy(p, fmt.Sprintf("%08d", i))
				want.Write(p)
				if n, err := c.Write(p); err != nil || n != len(p) {
					t.Fatalf("write %d: n=%d err=%v", i, n, err)
				}
			}
			select {
			case b := <-got:
				if !bytes.Equal(b, want.Bytes()) {
					t.Fatalf("received %d bytes, want %d in order", len(b), want.Len())
				}
			case <-time.After(20 * time.Second):
				t.Fatal("reader did not get everything")
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("write after close: %v, want net.ErrClosed", err)
			}
		})
	}
}

func TestCoalescingConnWriteErrorIsSticky(t *testing.T) {
	client, server := tlsPipe(t)
	c := newCoalescingConn(client)
	_ = server.NetConn().Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Write([]byte("frame")); err != nil {
			if _, again := c.Write([]byte("frame")); again == nil {
				t.Fatal("error was not sticky")
			}
			return
		}
	}
	t.Fatal("writes to a closed peer never failed")
}
