package tracking

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func testSigner(t testing.TB, key string, now *time.Time, opts ...SignerOption) *Signer {
	t.Helper()
	s, err := NewSigner([]byte(key), append([]SignerOption{WithClock(func() time.Time { return *now }), WithMaxAge(30 * 24 * time.Hour)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// flip changes one character of a base64url token in its middle.
func flip(tok string, at int) string {
	b := []byte(tok)
	if b[at] == 'A' {
		b[at] = 'B'
	} else {
		b[at] = 'A'
	}
	return string(b)
}

func TestTokenSignVerify(t *testing.T) {
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	clock := now
	s := testSigner(t, "0123456789abcdef-key-one", &clock)
	other := testSigner(t, "0123456789abcdef-key-two", &clock)
	ref := Ref{Campaign: "spring", MessageID: "spring:00000000000000ff:email:0", UserID: "u-1", UserKey: 255, Channel: "email"}
	tok := s.Token(ref)

	cases := []struct {
		name    string
		tok     string
		signer  *Signer
		at      time.Time
		wantErr error
	}{
		{name: "valid", tok: tok, signer: s, at: now},
		{name: "valid near the end of its life", tok: tok, signer: s, at: now.Add(30*24*time.Hour - time.Second)},
		{name: "expired", tok: tok, signer: s, at: now.Add(30*24*time.Hour + time.Second), wantErr: ErrExpired},
		{name: "wrong key", tok: tok, signer: other, at: now, wantErr: ErrSignature},
		{name: "tampered payload", tok: flip(tok, 10), signer: s, at: now, wantErr: ErrSignature},
		{name: "tampered mac", tok: flip(tok, len(tok)-3), signer: s, at: now, wantErr: ErrSignature},
		{name: "truncated", tok: tok[:len(tok)-4], signer: s, at: now, wantErr: ErrMalformed},
		{name: "truncated by a whole group", tok: tok[:len(tok)-len(tok)%4-4], signer: s, at: now, wantErr: ErrSignature},
		{name: "not base64", tok: "!!!" + tok, signer: s, at: now, wantErr: ErrMalformed},
		{name: "empty", tok: "", signer: s, at: now, wantErr: ErrMalformed},
		{name: "issued far in the future", tok: tok, signer: s, at: now.Add(-2 * time.Hour), wantErr: ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clock = c.at
			got, err := c.signer.Verify(c.tok)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("Verify: err %v, want %v", err, c.wantErr)
			}
			if err == nil {
				want := ref
				want.Issued = now
				if got != want {
					t.Fatalf("Verify: %+v, want %+v", got, want)
				}
			}
		})
	}
}

func TestLinkSignature(t *testing.T) {
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	s := testSigner(t, "0123456789abcdef-key-one", &now)
	other := testSigner(t, "0123456789abcdef-key-two", &now)
	const target = "https://shop.example.com/autumn?utm=mail&x=1"
	sig := s.LinkSig("spring", 2, target)
	cases := []struct {
		name     string
		signer   *Signer
		campaign string
		link     int
		target   string
		sig      string
		want     bool
	}{
		{"valid", s, "spring", 2, target, sig, true},
		{"open redirect: another target", s, "spring", 2, "https://evil.example.net/", sig, false},
		{"target with a suffix", s, "spring", 2, target + "&next=https://evil.example.net", sig, false},
		{"another campaign", s, "summer", 2, target, sig, false},
		{"another link number", s, "spring", 3, target, sig, false},
		{"wrong key", other, "spring", 2, target, sig, false},
		{"tampered signature", s, "spring", 2, target, flip(sig, 4), false},
		{"empty signature", s, "spring", 2, target, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.signer.VerifyLink(c.campaign, c.link, c.target, c.sig); got != c.want {
				t.Fatalf("VerifyLink = %v, want %v", got, c.want)
			}
		})
	}
}

func TestNewSignerRefusesShortKey(t *testing.T) {
	if _, err := NewSigner([]byte("short")); err == nil || !strings.Contains(err.Error(), "at least") {
		t.Fatalf("NewSigner(short key): %v", err)
	}
}

// FuzzVerify feeds the public endpoints' token parser arbitrary input: it
// must never panic, and only tokens this signer made may verify.
func FuzzVerify(f *testing.F) {
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	s := testSigner(f, "0123456789abcdef-key-one", &now)
	good := s.Token(Ref{Campaign: "c", MessageID: "c:1:email:0", UserID: "u", UserKey: 1, Channel: "email"})
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, tok string) {
		r, err := s.Verify(tok)
		if err == nil && s.Token(r) != tok {
			t.Fatalf("%q verified but is not what the signer makes for %+v", tok, r)
		}
	})
}
