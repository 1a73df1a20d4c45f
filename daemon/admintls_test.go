package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
)

// testCA issues certificates for the admin TLS test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "notifyd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for loopback (server) or a client.
func (ca *testCA) issue(t *testing.T, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "notifyd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// TestAdminTLS: with admin.tls the API answers over TLS only; with
// client_ca it also wants a client certificate signed by that CA.
func TestAdminTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, false)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certFile, keyFile, caFile := write("admin.crt", certPEM), write("admin.key", keyPEM), write("ca.crt", ca.pem)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.pem)
	ccert, ckey := ca.issue(t, true)
	clientPair, err := tls.X509KeyPair(ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		clientCA bool
	}{
		{"server certificate", false},
		{"mutual TLS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tlsCfg := fmt.Sprintf("  tls:\n    cert: {file: %q}\n    key: {file: %q}\n", certFile, keyFile)
			if tc.clientCA {
				tlsCfg += fmt.Sprintf("    client_ca: {file: %q}\n", caFile)
			}
			cfg, err := ParseConfig([]byte(fmt.Sprintf("shard:\n  path: %s\nadmin:\n  token: %s\n%s", writeTestShard(t, 10), testToken, tlsCfg)))
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			d, err := New(context.Background(), cfg, Deps{
				Channels: map[string]ChannelSpec{channels.Webhook: {Channel: &recordingChannel{name: channels.Webhook, users: map[string]int{}}}},
				Logger:   newTestLogger(&syncBuffer{}), Listener: ln,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			defer func() { cancel(); <-done }()
			base := "https://" + ln.Addr().String()
			get := func(c *http.Client, scheme string) (int, error) {
				resp, err := c.Get(strings.Replace(base, "https", scheme, 1) + "/healthz")
				if err != nil {
					return 0, err
				}
				resp.Body.Close()
				return resp.StatusCode, nil
			}
			client := func(certs ...tls.Certificate) *http.Client {
				return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
			}
			var status int
			waitFor(t, 10*time.Second, func() bool {
				status, err = get(client(clientPair), "https")
				return err == nil
			}, "admin API never answered over TLS")
			if status != http.StatusOK {
				t.Fatalf("healthz over TLS: %d", status)
			}
			if s, err := get(client(), "http"); err == nil && s == http.StatusOK {
				t.Fatal("the admin API answered in clear text")
			}
			if _, err := get(client(), "https"); tc.clientCA && err == nil {
				t.Fatal("mutual TLS: a client without a certificate was served")
			} else if !tc.clientCA && err != nil {
				t.Fatalf("server TLS: a client without a certificate was refused: %v", err)
			}
		})
	}
	t.Run("a bad pair is a config error", func(t *testing.T) {
		_, err := ParseConfig([]byte(fmt.Sprintf("shard:\n  path: /x\nadmin:\n  token: %s\n  tls:\n    cert: {file: %q}\n    key: {file: %q}\n", testToken, caFile, keyFile)))
		if err == nil || !strings.Contains(err.Error(), "admin.tls") || strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Fatalf("mismatched certificate and key: %v", err)
		}
	})
}
