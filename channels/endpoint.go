package channels

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLS is the trust configuration every provider accepts, so operators behind
// TLS-intercepting proxies and test rigs with their own CA can stand in for
// any provider.
type TLS struct {
	// CAFile is a PEM bundle of extra roots to trust (added to the system pool).
	CAFile string
	// RootCAs, when set, replaces the system pool (tests pass the sandbox's CA).
	RootCAs *x509.CertPool
	// ServerName overrides the name verified in the server's certificate.
	ServerName string
	// InsecureSkipVerify disables verification; for local rigs only.
	InsecureSkipVerify bool
}

// Config builds a *tls.Config from t. A zero TLS gives the system roots.
func (t TLS) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in for local rigs
	pool := t.RootCAs
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		if pool == nil {
			if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
		} else {
			pool = pool.Clone()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read CA bundle %s: no PEM certificates found", t.CAFile)
		}
	}
	cfg.RootCAs = pool
	return cfg, nil
}
