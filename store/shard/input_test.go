package shard_test

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

const issueExample = `{"id":"u-1","email":"ann@example.com","phone":"+14155550100","apns":["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],"fcm":["tok"],"webpush":[{"endpoint":"https://push.example/abc","p256dh":"BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU","auth":"AAAAAAAAAAAAAAAAAAAAAA"}],"locale":"pt-BR","timezone":"America/Sao_Paulo","consent":{"email":true,"sms":false,"push":true,"webpush":true},"attributes":{"first_name":"Ann","tier":"gold","ltv":123.4,"vip":true,"signup":"2024-01-02T03:04:05Z"},"segments":["gold","cart_abandoners"]}`

func readAll(dir string, format shard.Format, in string) ([]shard.Profile, error) {
	var out []shard.Profile
	w, err := shard.NewWriter(filepath.Join(dir, "x.shard"), shard.WriterOptions{})
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	err = shard.ReadProfiles(strings.NewReader(in), format, func(_ int, p *shard.Profile) error {
		if err := w.Add(p); err != nil {
			return err
		}
		c := *p
		c.Attributes = append([]shard.Attribute(nil), p.Attributes...)
		out = append(out, c)
		return nil
	})
	return out, err
}

func TestReadProfiles(t *testing.T) {
	tests := []struct {
		name     string
		format   shard.Format
		in       string
		wantN    int
		wantLine int // 0: no error
		wantErr  string
		check    func(t *testing.T, ps []shard.Profile)
	}{
		{"issue example", shard.FormatJSONL, issueExample + "\n", 1, 0, "", func(t *testing.T, ps []shard.Profile) {
			p := ps[0]
			if p.Consent.SMS != shard.ConsentDenied || p.Consent.Email != shard.ConsentGranted || len(p.Attributes) != 5 {
				t.Fatalf("decoded %+v", p)
			}
			for _, a := range p.Attributes {
				want := map[string]shard.ValueKind{"first_name": shard.KindString, "tier": shard.KindString,
					"ltv": shard.KindFloat, "vip": shard.KindBool, "signup": shard.KindTime}[a.Name]
				if a.Value.Kind() != want {
					t.Errorf("attribute %s: kind %v, want %v", a.Name, a.Value.Kind(), want)
				}
			}
		}},
		{"blank lines skipped", shard.FormatJSONL, "\n{\"id\":\"a\"}\n\n{\"id\":\"b\"}", 2, 0, "", nil},
		{"integers stay ints", shard.FormatJSONL, `{"id":"a","attributes":{"n":3,"f":3.0,"e":1e3,"nil":null}}`, 1, 0, "", func(t *testing.T, ps []shard.Profile) {
			kinds := map[string]shard.ValueKind{}
			for _, a := range ps[0].Attributes {
				kinds[a.Name] = a.Value.Kind()
			}
			if kinds["n"] != shard.KindInt || kinds["f"] != shard.KindFloat || kinds["e"] != shard.KindFloat || len(kinds) != 3 {
				t.Fatalf("kinds %v", kinds)
			}
		}},
		{"missing id", shard.FormatJSONL, "{\"id\":\"a\"}\n{\"email\":\"x@example.com\"}\n", 1, 2, `missing "id"`, nil},
		{"unknown field", shard.FormatJSONL, `{"id":"a","emial":"x"}`, 0, 1, "unknown field", nil},
		{"bad json", shard.FormatJSONL, "{\"id\":\"a\"}\n{\"id\":\"b\",\n", 1, 2, "decode profile", nil},
		{"trailing data", shard.FormatJSONL, `{"id":"a"} {"id":"b"}`, 0, 1, "trailing data", nil},
		{"bad phone", shard.FormatJSONL, `{"id":"a","phone":"555-1234"}`, 0, 1, "not E.164", nil},
		{"bad email", shard.FormatJSONL, `{"id":"a","email":"nobody"}`, 0, 1, "local@domain", nil},
		{"bad apns", shard.FormatJSONL, `{"id":"a","apns":["xyz"]}`, 0, 1, "hex device token", nil},
		{"bad zone", shard.FormatJSONL, `{"id":"a","timezone":"Mars/Olympus"}`, 0, 1, "unknown IANA time zone", nil},
		{"bad locale", shard.FormatJSONL, `{"id":"a","locale":"english please"}`, 0, 1, "BCP 47", nil},
		{"array attribute", shard.FormatJSONL, `{"id":"a","attributes":{"tags":["x"]}}`, 0, 1, "unsupported JSON type", nil},
		{"duplicate segment", shard.FormatJSONL, `{"id":"a","segments":["x","x"]}`, 0, 1, "listed twice", nil},
		{"csv typed and inferred", shard.FormatCSV,
			"id,email,consent_sms,segments,attr:zip:string,attr:age,attr:when\n" +
				"u-1,a@example.com,false,gold;vip,02139,41,2024-01-02T03:04:05Z\n" +
				"u-2,,,,,unknown,\n", 2, 0, "", func(t *testing.T, ps []shard.Profile) {
				if ps[0].Consent.SMS != shard.ConsentDenied || len(ps[0].Segments) != 2 || ps[1].Consent.SMS != shard.ConsentUnknown {
					t.Fatalf("decoded %+v", ps)
				}
				kinds := map[string]shard.ValueKind{}
				for _, a := range ps[0].Attributes {
					kinds[a.Name] = a.Value.Kind()
				}
				if kinds["zip"] != shard.KindString || kinds["age"] != shard.KindInt || kinds["when"] != shard.KindTime {
					t.Fatalf("kinds %v", kinds)
				}
				if ps[1].Attributes[0].Value.Kind() != shard.KindString {
					t.Fatalf("age on row 2 should be the string \"unknown\": %+v", ps[1].Attributes)
				}
			}},
		{"csv quoted multi-line counts lines", shard.FormatCSV, "id,attr:note\nu-1,\"two\nlines\"\nu-2,x\nu-3,\"bad\"quote\n", 2, 5, "", nil},
		{"csv unknown column", shard.FormatCSV, "id,mail\nu-1,x\n", 0, 1, `unknown column "mail"`, nil},
		{"csv missing id column", shard.FormatCSV, "email\na@example.com\n", 0, 1, `missing required column "id"`, nil},
		{"csv bad typed cell", shard.FormatCSV, "id,attr:n:int\nu-1,1\nu-2,x\n", 1, 3, "not an int", nil},
		{"csv bad consent", shard.FormatCSV, "id,consent_email\nu-1,yes\n", 0, 2, "want true, false or empty", nil},
		{"csv bad webpush", shard.FormatCSV, "id,webpush\nu-1,https://x\n", 0, 2, "endpoint|p256dh|auth", nil},
		// Issue 12 items 7 and 8.
		{"csv unbalanced quote", shard.FormatCSV, "id\nu-1\n\"u-2\n", 1, 3, `extraneous or missing "`, nil},
		{"jsonl invalid utf-8", shard.FormatJSONL, "{\"id\":\"a\"}\n{\"id\":\"b\",\"attributes\":{\"n\":\"x\xffy\"}}\n", 1, 2, "not valid UTF-8", nil},
		// Spreadsheet exports start with a byte order mark; it is not data.
		{"jsonl byte order mark skipped", shard.FormatJSONL, "\xef\xbb\xbf{\"id\":\"a\"}\n", 1, 0, "", nil},
		{"csv byte order mark skipped", shard.FormatCSV, "\xef\xbb\xbfid\nu-1\n", 1, 0, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := readAll(t.TempDir(), tc.format, tc.in)
			if len(ps) != tc.wantN {
				t.Fatalf("read %d profiles before stopping, want %d (err %v)", len(ps), tc.wantN, err)
			}
			if tc.wantLine == 0 {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				var le *shard.LineError
				if !errors.As(err, &le) || le.Line != tc.wantLine || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want line %d and %q", err, tc.wantLine, tc.wantErr)
				}
			}
			if tc.check != nil {
				tc.check(t, ps)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	g := shardgen.New(9)
	var p, back shard.Profile
	for i := range uint64(500) {
		g.Profile(i, &p)
		line := shard.AppendJSON(nil, &p)
		if err := shard.DecodeJSONProfile(line, &back); err != nil {
			t.Fatalf("profile %d: %v\n%s", i, err, line)
		}
		if len(back.Attributes) != len(p.Attributes) {
			t.Fatalf("profile %d: %d attributes back, want %d", i, len(back.Attributes), len(p.Attributes))
		}
		for _, a := range p.Attributes {
			found := false
			for _, b := range back.Attributes {
				if b.Name == a.Name {
					found = b.Value.Kind() == a.Value.Kind() && equalAny(b.Value.Any(), a.Value.Any())
				}
			}
			if !found {
				t.Fatalf("profile %d attribute %s=%v did not survive JSON", i, a.Name, a.Value.Any())
			}
		}
	}
}

func TestWriterRejects(t *testing.T) {
	tests := []struct {
		name    string
		profile shard.Profile
		want    string
	}{
		{"empty id", shard.Profile{}, "id: required"},
		{"nan float", shard.Profile{ID: "a", Attributes: []shard.Attribute{{Name: "x", Value: shard.FloatValue(nan())}}}, "not finite"},
		{"empty attribute name", shard.Profile{ID: "a", Attributes: []shard.Attribute{{Name: "", Value: shard.IntValue(1)}}}, "empty name"},
		{"attribute without value", shard.Profile{ID: "a", Attributes: []shard.Attribute{{Name: "x"}}}, "no value"},
		{"control character in id", shard.Profile{ID: "a\x01"}, "control character"},
		{"bad p256dh", shard.Profile{ID: "a", WebPush: []shard.WebPushSubscription{{Endpoint: "https://x.example/1", P256dh: "AAAA", Auth: "AAAAAAAAAAAAAAAAAAAAAA"}}}, "p256dh"},
		{"p256dh off the curve", shard.Profile{ID: "a", WebPush: []shard.WebPushSubscription{{Endpoint: "https://x.example/1", P256dh: "BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Auth: "AAAAAAAAAAAAAAAAAAAAAA"}}}, "not a point on P-256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := shard.NewWriter(filepath.Join(t.TempDir(), "x.shard"), shard.WriterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			if err := w.Add(&tc.profile); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Add: %v, want %q", err, tc.want)
			}
		})
	}
	t.Run("duplicate id fails the commit", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "dup.shard")
		w, _ := shard.NewWriter(path, shard.WriterOptions{})
		for range 2 {
			if err := w.Add(&shard.Profile{ID: "same"}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.Commit(context.Background()); err == nil || !strings.Contains(err.Error(), `duplicate id "same"`) {
			t.Fatalf("Commit: %v", err)
		}
		if _, err := shard.Open(path); err == nil {
			t.Fatal("a failed commit published a file")
		}
	})
	t.Run("dictionary cap inlines strings", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cap.shard")
		w, _ := shard.NewWriter(path, shard.WriterOptions{MaxDictStrings: 2})
		for i := range 10 {
			p := shard.Profile{ID: "u" + string(rune('a'+i))}
			p.SetAttr("s", shard.StringValue("value-"+string(rune('a'+i))))
			if err := w.Add(&p); err != nil {
				t.Fatal(err)
			}
		}
		st, err := w.Commit(context.Background())
		if err != nil || st.Strings != 2 {
			t.Fatalf("Commit: %+v %v, want 2 dictionary strings", st, err)
		}
		r, err := shard.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Release()
		row, _ := r.Lookup("uj")
		if v, _ := row.Attr("s"); v != "value-j" {
			t.Fatalf("inline string read back as %v", v)
		}
	})
}

func nan() float64 { return math.NaN() }

// TestErrorsLeakNoAddresses checks that rejecting a profile never echoes a
// push token or a web push endpoint/key (capabilities to message the user).
func TestErrorsLeakNoAddresses(t *testing.T) {
	const (
		apns     = "zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		fcm      = "secret-fcm token with spaces"
		endpoint = "https://push.example/capability-secret-123"
		auth     = "c2VjcmV0LWF1dGg"
	)
	tests := []struct {
		name   string
		format shard.Format
		in     string
	}{
		{"bad apns", shard.FormatJSONL, `{"id":"a","apns":["` + apns + `"]}`},
		{"bad fcm", shard.FormatJSONL, `{"id":"a","fcm":["` + fcm + `"]}`},
		{"bad webpush auth", shard.FormatJSONL, `{"id":"a","webpush":[{"endpoint":"` + endpoint + `","p256dh":"x","auth":"` + auth + `"}]}`},
		{"bad csv webpush cell", shard.FormatCSV, "id,webpush\na," + endpoint + "|" + auth + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(t.TempDir(), tc.format, tc.in)
			if err == nil {
				t.Fatal("bad profile accepted")
			}
			channelstest.AssertNoSecret(t, []string{apns, fcm, endpoint, auth, "capability-secret"}, err.Error())
		})
	}
}
