package tracking

import (
	"fmt"
	"html"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Paths of the public endpoints, under the base URL.
const (
	pathOpen        = "/o/"
	pathClick       = "/c/"
	pathUnsubscribe = "/u/"
	pathTwilio      = "/twilio/status/"
)

// UnsubscribeHref is an href an email template may use for its own
// unsubscribe link: it is replaced by the message's unsubscribe page when
// the campaign tracks unsubscribes (and left alone otherwise).
const UnsubscribeHref = "notifyd:unsubscribe"

// Links builds the public URLs of the tracking endpoint and rewrites HTML
// bodies. Safe for concurrent use.
type Links struct {
	base   string
	signer *Signer
	// campaigns caches each campaign's signed link suffixes by link number
	// (see linkSet): a campaign's links are the same for every recipient,
	// so their signatures are computed once, not per message.
	campaigns sync.Map // campaign id → *linkSet
	ncache    atomic.Int64
}

// maxCachedCampaigns bounds the suffix cache; past it the cache starts over.
const maxCachedCampaigns = 1024

// maxCachedLinks bounds the links cached per campaign: a template whose
// links differ per recipient would otherwise grow it per message.
const maxCachedLinks = 256

type linkSet struct{ entries atomic.Pointer[[]linkEntry] }

type linkEntry struct{ target, suffix string } // target: the href as written in the HTML

// NewLinks returns the URL builder for base (https://t.example.com, or
// with a path prefix).
func NewLinks(base string, s *Signer) (*Links, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("tracking base URL %q: want http(s)://host[/prefix] without query", base)
	}
	if s == nil {
		return nil, fmt.Errorf("tracking links: nil signer")
	}
	return &Links{base: strings.TrimSuffix(base, "/"), signer: s}, nil
}

// Signer returns the signer behind the links.
func (l *Links) Signer() *Signer { return l.signer }

// Token signs r.
func (l *Links) Token(r Ref) string { return l.signer.Token(r) }

// OpenURL is the open pixel of the message whose token is tok.
func (l *Links) OpenURL(tok string) string { return l.base + pathOpen + tok }

// UnsubscribeURL is the RFC 8058 one-click URL (POST) and confirmation page (GET).
func (l *Links) UnsubscribeURL(tok string) string { return l.base + pathUnsubscribe + tok }

// StatusCallbackURL is the Twilio StatusCallback of the message.
func (l *Links) StatusCallbackURL(tok string) string { return l.base + pathTwilio + tok }

// ClickURL is the tracked form of link number i (to target) of a campaign's message.
func (l *Links) ClickURL(tok, campaign string, i int, target string) string {
	return l.base + pathClick + tok + l.suffix(campaign, i, html.EscapeString(target))
}

// suffix is "/<i>/<link signature>?u=<target>" for an href value as it
// stands in HTML (entities escaped), cached per campaign by that value.
func (l *Links) suffix(campaign string, i int, href string) string {
	v, ok := l.campaigns.Load(campaign)
	if ok {
		if es := v.(*linkSet).entries.Load(); es != nil && i < len(*es) && (*es)[i].target == href {
			return (*es)[i].suffix
		}
	}
	target := html.UnescapeString(href)
	s := "/" + strconv.Itoa(i) + "/" + l.signer.LinkSig(campaign, i, target) + "?u=" + url.QueryEscape(target)
	if i >= maxCachedLinks {
		return s
	}
	if !ok {
		if l.ncache.Add(1) > maxCachedCampaigns {
			l.campaigns.Clear()
			l.ncache.Store(1)
		}
		v, _ = l.campaigns.LoadOrStore(campaign, &linkSet{})
	}
	set := v.(*linkSet)
	old := set.entries.Load()
	var es []linkEntry
	if old != nil {
		es = append(es, *old...)
	}
	for len(es) <= i {
		es = append(es, linkEntry{})
	}
	es[i] = linkEntry{target: href, suffix: s}
	set.entries.Store(&es) // a lost race costs a recomputation, never a wrong suffix
	return s
}

// RewriteOptions say what AppendHTML adds to a body.
type RewriteOptions struct {
	Token    string // the message's token
	Campaign string
	Clicks   bool // rewrite http(s) hrefs to click URLs
	Opens    bool // add the open pixel after <body>
	// Unsubscribe replaces href="notifyd:unsubscribe" with the message's
	// unsubscribe page.
	Unsubscribe bool
}

// AppendHTML appends body to dst with its links rewritten and the open
// pixel added as o says. The pixel goes right after the <body> tag, not at
// the end: the email composer re-uses the encoding of the lines a body
// shares with the previous recipient's after their last difference, and a
// per-recipient pixel at the bottom would leave none.
func (l *Links) AppendHTML(dst []byte, body string, o RewriteOptions) []byte {
	rest := body
	if o.Opens {
		at := bodyTagEnd(body)
		dst = append(dst, body[:at]...)
		dst = append(dst, `<img src="`...)
		dst = append(dst, l.base...)
		dst = append(dst, pathOpen...)
		dst = append(dst, o.Token...)
		dst = append(dst, `" width="1" height="1" alt="" style="border:0;width:1px;height:1px">`...)
		rest = body[at:]
	}
	if !o.Clicks && !o.Unsubscribe {
		return append(dst, rest...)
	}
	link := 0
	for {
		i := hrefValue(rest)
		if i < 0 {
			break
		}
		q := rest[i-1]
		end := strings.IndexByte(rest[i:], q)
		if end < 0 {
			break
		}
		raw := rest[i : i+end]
		dst = append(dst, rest[:i]...)
		rest = rest[i+end:]
		switch v := strings.TrimSpace(raw); {
		case o.Unsubscribe && v == UnsubscribeHref:
			dst = append(dst, l.base...)
			dst = append(dst, pathUnsubscribe...)
			dst = append(dst, o.Token...)
		case o.Clicks && trackable(v):
			dst = append(dst, l.base...)
			dst = append(dst, pathClick...)
			dst = append(dst, o.Token...)
			dst = append(dst, l.suffix(o.Campaign, link, v)...)
			link++
		default:
			dst = append(dst, raw...)
		}
	}
	return append(dst, rest...)
}

// trackable reports links worth a click URL: absolute http(s) ones that do
// not already point at the tracking endpoint.
func trackable(target string) bool {
	if len(target) < 8 {
		return false
	}
	p := strings.ToLower(target[:8])
	return strings.HasPrefix(p, "https://") || strings.HasPrefix(p, "http://")
}

// hrefValue returns the index of the first character of the next quoted
// href attribute value in s (the quote is at index-1), or -1.
func hrefValue(s string) int {
	off := 0
	for {
		i := strings.Index(s[off:], "ref=")
		if i < 0 {
			return -1
		}
		i += off
		off = i + 4
		if i < 2 || (s[i-1] != 'h' && s[i-1] != 'H') || !isSpace(s[i-2]) || off >= len(s) {
			continue
		}
		if q := s[off]; (q == '"' || q == '\'') && linkTag(s[:i]) {
			return off + 1
		}
	}
}

// linkTag reports whether the tag open at the end of s is an <a> or
// <area>: only links are clicked; a <link href> (a stylesheet) or <base
// href> sent through the click endpoint would break the message.
func linkTag(s string) bool {
	lt := strings.LastIndexByte(s, '<')
	if lt < 0 || strings.IndexByte(s[lt:], '>') >= 0 {
		return false
	}
	name := s[lt+1:]
	if i := strings.IndexAny(name, " \t\r\n"); i >= 0 {
		name = name[:i]
	}
	return strings.EqualFold(name, "a") || strings.EqualFold(name, "area")
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// bodyTagEnd is the index just after the <body ...> tag, or 0 without one.
func bodyTagEnd(s string) int {
	for off := 0; ; {
		i := strings.Index(s[off:], "<body")
		if i < 0 {
			i = strings.Index(s[off:], "<BODY")
		}
		if i < 0 {
			return 0
		}
		i += off
		if j := i + 5; j < len(s) && (s[j] == '>' || isSpace(s[j])) {
			if k := strings.IndexByte(s[j:], '>'); k >= 0 {
				return j + k + 1
			}
			return 0
		}
		off = i + 5
	}
}
