package webpush

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"
)

func b64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return b
}

// RFC 8291 Appendix A.
const (
	rfcPlaintext = "V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24"
	rfcASPublic  = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
	rfcASPrivate = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
	rfcUAPublic  = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
	rfcSalt      = "DGv6ra1nlYgDCS1FRnbzlw"
	rfcAuth      = "BTBZMqHH6r4Tts7J_aSIgg"
	rfcBody      = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)

func TestEncryptRFC8291AppendixA(t *testing.T) {
	as, err := ecdh.P256().NewPrivateKey(b64(t, rfcASPrivate))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(as.PublicKey().Bytes(), b64(t, rfcASPublic)) {
		t.Fatal("as_public differs from the vector")
	}
	tests := []struct {
		name   string
		p256dh string
		auth   string
	}{
		{name: "unpadded base64url as browsers send", p256dh: rfcUAPublic, auth: rfcAuth},
		{name: "padded base64url", p256dh: rfcUAPublic + "=", auth: rfcAuth + "=="},
		{name: "standard alphabet", p256dh: strings.NewReplacer("-", "+", "_", "/").Replace(rfcUAPublic), auth: rfcAuth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ua, secret, err := subscriptionKeys(tc.p256dh, tc.auth)
			if err != nil {
				t.Fatal(err)
			}
			prefix := []byte("keep")
			got, err := encrypt(append([]byte(nil), prefix...), b64(t, rfcPlaintext), ua, secret, as, b64(t, rfcSalt), 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, prefix) {
				t.Fatal("encrypt did not append to dst")
			}
			if want := b64(t, rfcBody); !bytes.Equal(got[len(prefix):], want) {
				t.Fatalf("body\n got %s\nwant %s", base64.RawURLEncoding.EncodeToString(got[len(prefix):]), rfcBody)
			}
		})
	}
}

func TestEncryptLimits(t *testing.T) {
	ua, _ := ecdh.P256().GenerateKey(rand.Reader)
	as, _ := ecdh.P256().GenerateKey(rand.Reader)
	auth := make([]byte, 16)
	salt := make([]byte, 16)
	tests := []struct {
		name     string
		plain    int
		pad      int
		wantErr  bool
		wantSize int
	}{
		{name: "largest payload fills the 4096-byte body", plain: MaxPayload, wantSize: 4096},
		{name: "one byte more is refused", plain: MaxPayload + 1, wantErr: true},
		{name: "padding counts against the limit", plain: MaxPayload - 10, pad: 11, wantErr: true},
		{name: "padding adds zeros", plain: 100, pad: 28, wantSize: headerLen + 100 + 1 + 28 + tagLen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := encrypt(nil, make([]byte, tc.plain), ua.PublicKey(), auth, as, salt, tc.pad)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.wantSize {
				t.Fatalf("body is %d bytes, want %d", len(got), tc.wantSize)
			}
		})
	}
}

func TestSubscriptionKeys(t *testing.T) {
	goodAuth := rfcAuth
	tests := []struct {
		name    string
		p256dh  string
		auth    string
		wantErr string
	}{
		{name: "p256dh not base64", p256dh: "!!!", auth: goodAuth, wantErr: "p256dh: not base64url"},
		{name: "p256dh compressed point length", p256dh: base64.RawURLEncoding.EncodeToString(make([]byte, 33)), auth: goodAuth, wantErr: "33 bytes, want 65"},
		{name: "p256dh not on the curve", p256dh: base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...)), auth: goodAuth, wantErr: "not a point"},
		{name: "auth not base64", p256dh: rfcUAPublic, auth: "@@@@", wantErr: "auth: not base64url"},
		{name: "auth wrong length", p256dh: rfcUAPublic, auth: base64.RawURLEncoding.EncodeToString(make([]byte, 12)), wantErr: "12 bytes, want 16"},
		{name: "auth empty", p256dh: rfcUAPublic, auth: "", wantErr: "0 bytes, want 16"},
		{name: "valid", p256dh: rfcUAPublic, auth: goodAuth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := subscriptionKeys(tc.p256dh, tc.auth)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if tc.auth != "" && strings.Contains(err.Error(), tc.auth) {
				t.Fatal("error repeats the auth secret")
			}
		})
	}
}

func newKeyPair(t testing.TB) (pub, priv string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := k.Bytes()
	p, _ := k.PublicKey.Bytes()
	return base64.RawURLEncoding.EncodeToString(p), base64.RawURLEncoding.EncodeToString(d)
}

func TestNewVAPIDValidation(t *testing.T) {
	pub, priv := newKeyPair(t)
	otherPub, _ := newKeyPair(t)
	tests := []struct {
		name    string
		pub     string
		priv    string
		sub     string
		wantErr string
	}{
		{name: "valid mailto", pub: pub, priv: priv, sub: "mailto:ops@example.com"},
		{name: "valid https", pub: pub, priv: priv, sub: "https://example.com/contact"},
		{name: "padded keys", pub: pub + "=", priv: priv + "=", sub: "mailto:ops@example.com"},
		{name: "missing private", pub: pub, sub: "mailto:a@b", wantErr: "private key is required"},
		{name: "missing public", priv: priv, sub: "mailto:a@b", wantErr: "public key is required"},
		{name: "private not base64", pub: pub, priv: "not*base64", sub: "mailto:a@b", wantErr: "private key: not base64url"},
		{name: "private wrong size", pub: pub, priv: base64.RawURLEncoding.EncodeToString(make([]byte, 31)), sub: "mailto:a@b", wantErr: "32-byte P-256 scalar"},
		{name: "keys do not match", pub: otherPub, priv: priv, sub: "mailto:a@b", wantErr: "does not belong"},
		{name: "bare address", pub: pub, priv: priv, sub: "ops@example.com", wantErr: "want a mailto: or https://"},
		{name: "http contact", pub: pub, priv: priv, sub: "http://example.com", wantErr: "want a mailto: or https://"},
		{name: "empty mailto", pub: pub, priv: priv, sub: "mailto:", wantErr: "empty contact"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newVAPID(tc.pub, tc.priv, tc.sub, time.Now)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), priv) {
				t.Fatal("error contains the private key")
			}
		})
	}
}

// verifyToken checks a VAPID header independently of the signer: split,
// decode, ES256-verify with k, and return the claims.
func verifyToken(t *testing.T, header string) (aud, sub string, exp int64) {
	t.Helper()
	rest, ok := strings.CutPrefix(header, "vapid t=")
	if !ok {
		t.Fatalf("header %q lacks vapid t=", header)
	}
	tok, k, ok := strings.Cut(rest, ", k=")
	if !ok {
		t.Fatalf("header %q lacks k=", header)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	var hdr map[string]string
	if err := json.Unmarshal(b64(t, parts[0]), &hdr); err != nil || hdr["alg"] != "ES256" || hdr["typ"] != "JWT" {
		t.Fatalf("JWT header %v (%v)", hdr, err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b64(t, k))
	if err != nil {
		t.Fatal(err)
	}
	sig := b64(t, parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if len(sig) != 64 || !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("signature does not verify")
	}
	var c struct {
		Aud string `json:"aud"`
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
	}
	if err := json.Unmarshal(b64(t, parts[1]), &c); err != nil {
		t.Fatal(err)
	}
	return c.Aud, c.Sub, c.Exp
}

func TestVAPIDTokenCache(t *testing.T) {
	pub, priv := newKeyPair(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	v, err := newVAPID(pub, priv, "mailto:ops@example.com", clock)
	if err != nil {
		t.Fatal(err)
	}
	first, err := v.authorization("https://push.example")
	if err != nil {
		t.Fatal(err)
	}
	aud, sub, exp := verifyToken(t, first)
	if aud != "https://push.example" || sub != "mailto:ops@example.com" || exp != now.Add(12*time.Hour).Unix() {
		t.Fatalf("claims aud=%q sub=%q exp=%d", aud, sub, exp)
	}
	if !strings.HasSuffix(first, ", k="+pub) {
		t.Fatalf("k is not the configured public key: %q", first)
	}

	steps := []struct {
		name     string
		advance  time.Duration
		audience string
		wantSame bool
	}{
		{name: "same origin reuses the token", advance: time.Minute, audience: "https://push.example", wantSame: true},
		{name: "other origin gets its own token", audience: "https://other.example", wantSame: false},
		{name: "still within refresh window", advance: 5 * time.Hour, audience: "https://push.example", wantSame: true},
		{name: "re-signed after six hours", advance: time.Hour, audience: "https://push.example", wantSame: false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			now = now.Add(st.advance)
			got, err := v.authorization(st.audience)
			if err != nil {
				t.Fatal(err)
			}
			if (got == first) != st.wantSame {
				t.Fatalf("same token = %v, want %v", got == first, st.wantSame)
			}
			aud, _, exp := verifyToken(t, got)
			if aud != st.audience {
				t.Fatalf("aud = %q, want %q", aud, st.audience)
			}
			if left := time.Unix(exp, 0).Sub(now); left < 6*time.Hour || left > 24*time.Hour {
				t.Fatalf("token presented with %s left", left)
			}
		})
	}
}
