package channels_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/notifyd/notifyd/channels"
)

func TestNetGuard(t *testing.T) {
	def, err := channels.NewNetGuard(nil)
	if err != nil {
		t.Fatal(err)
	}
	allowing, err := channels.NewNetGuard([]string{"10.1.0.0/16", "192.168.7.7"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		guard   *channels.NetGuard
		addr    string
		blocked bool
	}{
		{"public v4", def, "93.184.215.14", false},
		{"public v6", def, "2606:4700::6810:84e5", false},
		{"loopback", def, "127.0.0.1", true},
		{"loopback elsewhere in 127/8", def, "127.45.0.9", true},
		{"v6 loopback", def, "::1", true},
		{"rfc1918 10/8", def, "10.0.0.5", true},
		{"rfc1918 172.16/12", def, "172.31.255.1", true},
		{"just outside 172.16/12", def, "172.32.0.1", false},
		{"rfc1918 192.168/16", def, "192.168.1.1", true},
		{"cloud metadata", def, "169.254.169.254", true},
		{"carrier-grade NAT", def, "100.64.0.1", true},
		{"unspecified", def, "0.0.0.0", true},
		{"v6 unspecified", def, "::", true},
		{"unique local", def, "fd00::1", true},
		{"v6 link-local", def, "fe80::1", true},
		{"multicast", def, "239.1.1.1", true},
		{"IPv4-mapped loopback", def, "::ffff:127.0.0.1", true},
		{"NAT64 wrapping a private address", def, "64:ff9b::a00:1", true},
		{"NAT64 wrapping a public address", def, "64:ff9b::5db8:d70e", false},
		{"allowed prefix", allowing, "10.1.2.3", false},
		{"outside the allowed prefix", allowing, "10.2.0.1", true},
		{"allowed single address", allowing, "192.168.7.7", false},
		{"nil guard allows all", nil, "127.0.0.1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.guard.CheckAddr(netip.MustParseAddr(tc.addr))
			if got := errors.Is(err, channels.ErrBlockedDestination); got != tc.blocked {
				t.Fatalf("CheckAddr(%s) = %v, want blocked=%t", tc.addr, err, tc.blocked)
			}
		})
	}
}

func TestNetGuardHostAndDial(t *testing.T) {
	g, err := channels.NewNetGuard(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.CheckHost("push.example.com"); err != nil {
		t.Fatalf("CheckHost(name) = %v; names are judged at dial time", err)
	}
	if err := g.CheckHost("10.0.0.1"); !errors.Is(err, channels.ErrBlockedDestination) {
		t.Fatalf("CheckHost(10.0.0.1) = %v, want blocked", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = g.Dialer(&net.Dialer{}).DialContext(context.Background(), "tcp", ln.Addr().String())
	if !errors.Is(err, channels.ErrBlockedDestination) {
		t.Fatalf("dial loopback through the guard = %v, want blocked", err)
	}
	if _, err := channels.NewNetGuard([]string{"not-a-network"}); err == nil {
		t.Fatal("NewNetGuard accepted a malformed entry")
	}
}
