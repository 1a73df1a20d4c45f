package deliverylog

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
)

// AddressMode says how much of an address the log keeps.
type AddressMode string

// Address modes.
const (
	// AddressHash keeps 24 hex digits of SHA-256(salt || address): joins and
	// counts per address without the address.
	AddressHash AddressMode = "hash"
	// AddressTruncate keeps a recognisable part: a token's first 8
	// characters (no marker), an email's first letter and domain, a phone number's last
	// 4 digits, a URL's scheme and host.
	AddressTruncate AddressMode = "truncate"
	// AddressPlain keeps the address as is.
	AddressPlain AddressMode = "plain"
	// AddressOmit keeps nothing.
	AddressOmit AddressMode = "omit"
)

// ParseAddressMode checks a mode name; empty is def.
func ParseAddressMode(s string, def AddressMode) (AddressMode, error) {
	switch m := AddressMode(s); m {
	case AddressHash, AddressTruncate, AddressPlain, AddressOmit:
		return m, nil
	case "":
		return def, nil
	}
	return "", fmt.Errorf("address mode %q: want hash, truncate, plain or omit", s)
}

// Masker applies the configured modes: Token to device tokens, web push
// endpoints and webhook recipients, Email to email addresses, Phone to
// phone numbers.
type Masker struct {
	Token, Email, Phone AddressMode
	// Salt is prefixed before hashing, so hashes cannot be matched against
	// a list of known addresses by whoever lacks it.
	Salt string
}

// AppendMask appends Mask(channel, addr) to dst. Hashes and truncated
// emails and phones cost no allocation this way (Mask's hex string was the
// log's one allocation per message on the senders' path); truncated URLs
// still go through Mask.
func (m *Masker) AppendMask(dst []byte, channel, addr string) []byte {
	if addr == "" {
		return dst
	}
	mode, class := m.Token, classToken
	switch channel {
	case "email":
		mode, class = m.Email, classEmail
	case "sms":
		mode, class = m.Phone, classPhone
	}
	switch {
	case mode == AddressPlain:
		return append(dst, addr...)
	case mode == AddressOmit:
		return dst
	case mode == AddressHash:
		var buf [256]byte
		b := append(append(buf[:0], m.Salt...), addr...)
		sum := sha256.Sum256(b)
		return hex.AppendEncode(dst, sum[:12])
	case class == classEmail:
		at := strings.LastIndexByte(addr, '@')
		if at <= 0 {
			return append(dst, "…"...)
		}
		return append(append(append(dst, addr[:1]...), "…"...), addr[at:]...)
	case class == classPhone:
		if len(addr) <= 4 {
			return append(dst, "…"...)
		}
		return append(append(dst, "…"...), addr[len(addr)-4:]...)
	}
	return append(dst, truncate(class, addr)...)
}

// Mask returns what the log keeps of addr, an address on channel.
func (m *Masker) Mask(channel, addr string) string {
	if addr == "" {
		return ""
	}
	mode, class := m.Token, classToken
	switch channel {
	case "email":
		mode, class = m.Email, classEmail
	case "sms":
		mode, class = m.Phone, classPhone
	}
	switch mode {
	case AddressPlain:
		return addr
	case AddressOmit:
		return ""
	case AddressHash:
		var buf [256]byte
		b := append(append(buf[:0], m.Salt...), addr...)
		sum := sha256.Sum256(b)
		return hex.EncodeToString(sum[:12])
	}
	return truncate(class, addr)
}

const (
	classToken = iota
	classEmail
	classPhone
)

func truncate(class int, addr string) string {
	switch class {
	case classEmail:
		at := strings.LastIndexByte(addr, '@')
		if at <= 0 {
			return "…"
		}
		return addr[:1] + "…" + addr[at:]
	case classPhone:
		if len(addr) <= 4 {
			return "…"
		}
		return "…" + addr[len(addr)-4:]
	}
	if strings.Contains(addr, "://") {
		if u, err := url.Parse(addr); err == nil && u.Host != "" {
			return u.Scheme + "://" + u.Host + "/…"
		}
	}
	if len(addr) <= 8 {
		return addr
	}
	// A slice of the address, not a copy: no allocation per message (the
	// record is encoded before the caller's buffer can change).
	return addr[:8]
}
