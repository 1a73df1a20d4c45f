package shard_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// profile is the templates package's view of a recipient, copied here so the
// test fails to compile if Row stops satisfying it.
type profile interface {
	ID() string
	Locale() string
	TimeZone() string
	Attr(name string) (value any, ok bool)
}

var _ profile = shard.Row{}

func buildGenerated(t testing.TB, n uint64, blockRows int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gen.shard")
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 7, BlockRows: blockRows})
	if err != nil {
		t.Fatal(err)
	}
	g := shardgen.New(42)
	var p shard.Profile
	// Add in reverse so the writer's sort is exercised.
	for i := n; i > 0; i-- {
		g.Profile(i-1, &p)
		if err := w.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRoundTrip(t *testing.T) {
	const n = 3000
	path := buildGenerated(t, n, 128)
	r, err := shard.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if r.Rows() != n || r.Generation() != 7 {
		t.Fatalf("rows %d generation %d, want %d and 7", r.Rows(), r.Generation(), n)
	}
	g := shardgen.New(42)
	var want shard.Profile
	members := map[string]int{}
	for i := uint64(0); i < n; i++ {
		g.Profile(i, &want)
		row, ok := r.Lookup(want.ID)
		if !ok {
			t.Fatalf("lookup %q: not found", want.ID)
		}
		var got shard.Profile
		row.Profile(&got)
		got.Segments = nil
		for _, s := range r.Segments() {
			seg, err := r.Segment(s.Name)
			if err != nil {
				t.Fatal(err)
			}
			if seg.Contains(row.Index()) {
				got.Segments = append(got.Segments, s.Name)
			}
		}
		for _, s := range want.Segments {
			members[s]++
		}
		comparePlain(t, &want, &got)
		if row.Key() != shard.Key(want.ID) {
			t.Fatalf("row %d key %x, want %x", row.Index(), row.Key(), shard.Key(want.ID))
		}
	}
	for _, s := range r.Segments() {
		if uint64(members[s.Name]) != s.Members {
			t.Errorf("segment %s: %d members, want %d", s.Name, s.Members, members[s.Name])
		}
	}
	if _, ok := r.Lookup("u-does-not-exist"); ok {
		t.Error("lookup of an absent id succeeded")
	}
	if rep := r.Verify(context.Background()); !rep.OK() {
		t.Fatalf("verify: %v", rep.Problems)
	}
}

func comparePlain(t *testing.T, want, got *shard.Profile) {
	t.Helper()
	same := want.ID == got.ID && want.Email == got.Email && want.Phone == got.Phone &&
		want.Locale == got.Locale && want.TimeZone == got.TimeZone && want.Consent == got.Consent &&
		slices.Equal(want.APNs, got.APNs) && slices.Equal(want.FCM, got.FCM) &&
		slices.Equal(want.WebPush, got.WebPush) && slices.Equal(sorted(want.Segments), sorted(got.Segments))
	if !same {
		t.Fatalf("profile %s differs:\nwant %+v\ngot  %+v", want.ID, *want, *got)
	}
	if len(want.Attributes) != len(got.Attributes) {
		t.Fatalf("profile %s: %d attributes, want %d", want.ID, len(got.Attributes), len(want.Attributes))
	}
	for _, a := range want.Attributes {
		i := slices.IndexFunc(got.Attributes, func(b shard.Attribute) bool { return b.Name == a.Name })
		if i < 0 || got.Attributes[i].Value.Kind() != a.Value.Kind() || !equalAny(got.Attributes[i].Value.Any(), a.Value.Any()) {
			t.Fatalf("profile %s attribute %s: got %+v, want %v", want.ID, a.Name, got.Attributes, a.Value.Any())
		}
	}
}

func equalAny(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	return a == b
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestRowAccessors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acc.shard")
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	signup := time.Date(2024, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	full := shard.Profile{
		ID: "u-1", Email: "ann@example.com", Phone: "+14155550100",
		APNs: []string{"aa0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"},
		FCM:  []string{"tok-1", "tok-2"},
		WebPush: []shard.WebPushSubscription{{Endpoint: "https://push.example/abc",
			P256dh: "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
			Auth:   "AAAAAAAAAAAAAAAAAAAAAA"}},
		Locale: "pt-BR", TimeZone: "America/Sao_Paulo",
		Consent:  shard.Consents{Email: shard.ConsentGranted, SMS: shard.ConsentDenied},
		Segments: []string{"gold"},
	}
	full.SetAttr("first_name", shard.StringValue("Ann"))
	full.SetAttr("tier", shard.StringValue("gold"))
	full.SetAttr("ltv", shard.FloatValue(123.4))
	full.SetAttr("orders", shard.IntValue(-7))
	full.SetAttr("vip", shard.BoolValue(true))
	full.SetAttr("signup", shard.TimeValue(signup))
	bare := shard.Profile{ID: "u-2"}
	bare.SetAttr("ltv", shard.StringValue("n/a")) // same attribute, another type
	for _, p := range []*shard.Profile{&full, &bare} {
		if err := w.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := shard.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	a, _ := r.Lookup("u-1")
	b, _ := r.Lookup("u-2")
	ltv, _ := r.AttrID("ltv")
	orders, _ := r.AttrID("orders")
	signupID, _ := r.AttrID("signup")

	tests := []struct {
		name      string
		got, want any
	}{
		{"id", a.ID(), "u-1"},
		{"email", a.Email(), "ann@example.com"},
		{"phone", a.Phone(), "+14155550100"},
		{"locale", a.Locale(), "pt-BR"},
		{"timezone", a.TimeZone(), "America/Sao_Paulo"},
		{"apns", len(a.APNsTokens(nil)), 1},
		{"fcm", a.FCMTokens(nil), []string{"tok-1", "tok-2"}},
		{"webpush endpoint", a.WebPush(nil)[0].Endpoint, "https://push.example/abc"},
		{"consent email granted", a.Consent(shard.ConsentEmail), shard.ConsentGranted},
		{"consent sms denied", a.Consent(shard.ConsentSMS), shard.ConsentDenied},
		{"consent push unknown", a.Consent(shard.ConsentPush), shard.ConsentUnknown},
		{"attr string", mustAttr(a, "first_name"), "Ann"},
		{"attr float", mustAttr(a, "ltv"), 123.4},
		{"attr int", mustAttr(a, "orders"), int64(-7)},
		{"attr bool", mustAttr(a, "vip"), true},
		{"attr time is UTC", mustAttr(a, "signup"), signup.UTC()},
		{"typed float", first(a.FloatAttr(ltv)), 123.4},
		{"typed int", first(a.IntAttr(orders)), int64(-7)},
		{"typed time", first(a.TimeAttr(signupID)), signup.UTC()},
		{"mixed type on other row", mustAttr(b, "ltv"), "n/a"},
		{"mixed type kind", b.AttrKind(ltv), shard.KindString},
		{"typed getter rejects other type", second(b.FloatAttr(ltv)), false},
		{"absent attribute", second(b.Attr("first_name")), false},
		{"unknown attribute", second(b.Attr("nope")), false},
		{"bare email", b.Email(), ""},
		{"bare locale", b.Locale(), ""},
		{"bare tokens", len(b.APNsTokens(nil)) + len(b.FCMTokens(nil)) + len(b.WebPush(nil)), 0},
		{"zero row", shard.Row{}.Email(), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !equalDeep(tc.got, tc.want) {
				t.Errorf("got %#v, want %#v", tc.got, tc.want)
			}
		})
	}
}

func equalDeep(a, b any) bool {
	if sa, ok := a.([]string); ok {
		sb, ok := b.([]string)
		return ok && slices.Equal(sa, sb)
	}
	return equalAny(a, b)
}

func mustAttr(r shard.Row, name string) any {
	v, _ := r.Attr(name)
	return v
}

func first[T any](v T, _ bool) T      { return v }
func second[T any](_ T, ok bool) bool { return ok }

func TestSegmentIteration(t *testing.T) {
	const n = 5000
	path := buildGenerated(t, n, 256)
	r, err := shard.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	for _, info := range r.Segments() {
		t.Run(info.Name, func(t *testing.T) {
			seg, err := r.Segment(info.Name)
			if err != nil {
				t.Fatal(err)
			}
			var all []uint32
			buf := make([]uint32, 97)
			for it := seg.Iter(); ; {
				k := it.Next(buf)
				if k == 0 {
					break
				}
				all = append(all, buf[:k]...)
			}
			if uint64(len(all)) != info.Members || !slices.IsSorted(all) {
				t.Fatalf("iterated %d sorted=%v, want %d sorted", len(all), slices.IsSorted(all), info.Members)
			}
			// Resume after the key of a member in the middle, and after
			// keys that fall between rows and beyond the end.
			for _, cut := range []int{0, len(all) / 3, len(all) - 1} {
				if len(all) == 0 {
					break
				}
				row, _ := r.Row(all[cut])
				it, err := seg.IterAfterKey(row.Key())
				if err != nil {
					t.Fatal(err)
				}
				var rest []uint32
				for {
					k := it.Next(buf)
					if k == 0 {
						break
					}
					rest = append(rest, buf[:k]...)
				}
				if !slices.Equal(rest, all[cut+1:]) {
					t.Fatalf("resume after member %d: got %d rows, want %d", cut, len(rest), len(all)-cut-1)
				}
			}
			it, err := seg.IterAfterKey(^uint64(0))
			if err != nil || it.Next(buf) != 0 {
				t.Fatalf("resume after max key: err %v, rows left", err)
			}
		})
	}
	if _, err := r.Segment("nope"); err == nil {
		t.Error("unknown segment: no error")
	}
}

// TestConcurrentFirstUse races many readers over a fresh mapping, so that
// first-use verification of the same blocks happens concurrently (run with
// -race).
func TestConcurrentFirstUse(t *testing.T) {
	path := buildGenerated(t, 4000, 64)
	r, err := shard.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	fn, _ := r.AttrID("first_name")
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			for i := range uint32(4000) {
				row, err := r.Row((i*7 + uint32(w)*131) % 4000)
				if err != nil {
					errs <- err
					return
				}
				row.StringAttr(fn)
				if _, ok := r.Lookup(shardgen.ID(uint64(i))); !ok {
					errs <- fmt.Errorf("lookup %s failed", shardgen.ID(uint64(i)))
					return
				}
			}
			if _, err := r.Segment("newsletter"); err != nil {
				errs <- err
				return
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// The published file must be readable by the daemon, which usually runs as
// another user than the store that writes it.
func TestPublishedShardIsWorldReadable(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode os.FileMode
		want os.FileMode
	}{
		{"default", 0, 0o644},
		{"explicit", 0o640, 0o640},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.shard")
			w, err := shard.NewWriter(path, shard.WriterOptions{Mode: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Add(&shard.Profile{ID: "u-1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tc.want {
				t.Fatalf("mode %v, want %v", st.Mode().Perm(), tc.want)
			}
		})
	}
}
