package channels_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
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
	allowingV6, err := channels.NewNetGuard([]string{"fd12::/16"})
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
		// netip.Prefix.Contains is false for any zoned address, so a zone
		// once walked past every blocked range (issue 12 item 1).
		{"zoned v6 loopback", def, "::1%lo", true},
		{"zoned unique local", def, "fd00::1%eth0", true},
		{"zoned link-local", def, "fe80::1%eth0", true},
		{"zoned public address", def, "2606:4700::6810:84e5%eth0", true},
		{"zoned numeric interface", def, "::1%1", true},
		{"zoned address in an allowed prefix", allowingV6, "fd12::5%eth0", false},
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
	for _, host := range []string{"10.0.0.1", "::1%lo", "fd00::1%25eth0"} {
		if err := g.CheckHost(host); !errors.Is(err, channels.ErrBlockedDestination) {
			t.Fatalf("CheckHost(%s) = %v, want blocked", host, err)
		}
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
	// A zoned dial is how the audit reached loopback: [::1%lo]:PORT.
	ln6, err := net.Listen("tcp", "[::1]:0")
	if err == nil {
		defer ln6.Close()
		port := ln6.Addr().(*net.TCPAddr).Port
		for _, zone := range []string{"lo", "1"} {
			addr := net.JoinHostPort("::1%"+zone, strconv.Itoa(port))
			conn, err := g.Dialer(&net.Dialer{}).DialContext(context.Background(), "tcp", addr)
			if err == nil {
				conn.Close()
			}
			if !errors.Is(err, channels.ErrBlockedDestination) {
				t.Fatalf("dial %s through the guard = %v, want blocked", addr, err)
			}
		}
	}
	if _, err := channels.NewNetGuard([]string{"not-a-network"}); err == nil {
		t.Fatal("NewNetGuard accepted a malformed entry")
	}
}
