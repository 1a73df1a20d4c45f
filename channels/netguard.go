package channels

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// ErrBlockedDestination is wrapped by every refusal of a NetGuard. Channels
// classify it as a permanent ReasonInvalid failure: retrying cannot make a
// private address public.
var ErrBlockedDestination = errors.New("destination address is not allowed")

// NetGuard keeps destinations that outsiders choose (webhook URLs built from
// templates and trigger data, browsers' web push endpoints) from reaching
// the daemon's own network: loopback, private, link-local (cloud metadata
// at 169.254.169.254), carrier-grade NAT, multicast and unspecified
// addresses are refused unless an operator allows them.
//
// The check runs in the dialer's Control hook, on the address actually
// being connected to after DNS resolution, so a name that resolves (or
// re-resolves) to a private address is caught too. When an HTTP proxy is
// configured the dial goes to the proxy, so the proxy's address must be in
// Allow and the proxy becomes responsible for where requests go.
//
// The zero value refuses every blocked range; a nil *NetGuard allows all.
type NetGuard struct {
	allow []netip.Prefix
}

// blockedPrefixes are the ranges no public service lives in.
var blockedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",      // "this network"
		"10.0.0.0/8",     // RFC 1918
		"100.64.0.0/10",  // carrier-grade NAT
		"127.0.0.0/8",    // loopback
		"169.254.0.0/16", // link-local, cloud metadata services
		"172.16.0.0/12",  // RFC 1918
		"192.0.0.0/24",   // IETF protocol assignments
		"192.168.0.0/16", // RFC 1918
		"198.18.0.0/15",  // benchmarking
		"224.0.0.0/4",    // multicast
		"240.0.0.0/4",    // reserved, broadcast
		"::/128",         // unspecified
		"::1/128",        // loopback
		"fc00::/7",       // unique local
		"fe80::/10",      // link-local
		"ff00::/8",       // multicast
		"64:ff9b:1::/48", // local-use NAT64
		"2001:db8::/32",  // documentation
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// NewNetGuard builds a guard that also lets through the CIDR prefixes (or
// single addresses) in allow, e.g. an internal webhook receiver or a proxy.
func NewNetGuard(allow []string) (*NetGuard, error) {
	g := &NetGuard{}
	for _, s := range allow {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("parse allowed network %q: want a CIDR prefix or an IP address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		g.allow = append(g.allow, p.Masked())
	}
	return g, nil
}

// CheckAddr reports whether a connection to a may be made.
func (g *NetGuard) CheckAddr(a netip.Addr) error {
	if g == nil {
		return nil
	}
	// netip.Prefix.Contains is false for every address with a zone, so a
	// zoned address would match no blocked range: [::1%lo] reached
	// loopback. Judge the address without its zone, and refuse a zone
	// outright unless an operator allowed the address: a zone picks the
	// interface to leave by, which no public destination needs.
	zone := a.Zone()
	a = a.WithZone("").Unmap()
	// The well-known NAT64 prefix carries an IPv4 address in its last 32
	// bits; judge that address, not the wrapper.
	if a.Is6() && nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	for _, p := range g.allow {
		if p.Contains(a) {
			return nil
		}
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return fmt.Errorf("check destination %s: %w (in %s; allow it in the channel's allow_networks)", a, ErrBlockedDestination, p)
		}
	}
	if zone != "" {
		return fmt.Errorf("check destination %s%%%s: %w (an IPv6 zone names a local interface)", a, zone, ErrBlockedDestination)
	}
	return nil
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// CheckHost refuses a URL host that is a literal blocked address before any
// dial, so the error is immediate and names the host. Names pass here and
// are judged at dial time.
func (g *NetGuard) CheckHost(host string) error {
	if g == nil {
		return nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	return g.CheckAddr(a)
}

// Control is a net.Dialer ControlContext hook: it runs after resolution,
// before connect, for every address tried.
func (g *NetGuard) Control(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("check destination %q: %w", address, ErrBlockedDestination)
	}
	return g.CheckAddr(ap.Addr())
}

// Dialer returns d with g's check installed. A nil guard leaves d as is.
func (g *NetGuard) Dialer(d *net.Dialer) *net.Dialer {
	if g != nil {
		d.ControlContext = g.Control
	}
	return d
}
