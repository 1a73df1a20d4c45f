package campaigns

import "testing"

func TestStatusCanTransition(t *testing.T) {
	all := []Status{StatusScheduled, StatusRunning, StatusPaused, StatusCompleted, StatusCancelled, StatusFailed, "bogus"}
	allowed := map[[2]Status]bool{
		{StatusScheduled, StatusRunning}: true, {StatusScheduled, StatusPaused}: true, {StatusScheduled, StatusCancelled}: true,
		{StatusRunning, StatusPaused}: true, {StatusRunning, StatusCompleted}: true, {StatusRunning, StatusCancelled}: true, {StatusRunning, StatusFailed}: true,
		{StatusPaused, StatusRunning}: true, {StatusPaused, StatusCancelled}: true, {StatusPaused, StatusFailed}: true,
		{StatusCompleted, StatusRunning}: true, {StatusFailed, StatusRunning}: true,
	}
	for _, from := range all {
		for _, to := range all {
			t.Run(string(from)+"→"+string(to), func(t *testing.T) {
				if got := from.CanTransition(to); got != allowed[[2]Status{from, to}] {
					t.Fatalf("CanTransition = %v", got)
				}
			})
		}
	}
	for _, s := range all {
		if s.Valid() == (s == "bogus") {
			t.Errorf("%q.Valid() = %v", s, s.Valid())
		}
	}
}

func TestBitmap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		set   []int
		bytes []byte
	}{
		{"empty", 0, nil, []byte{}},
		{"redis bit order: position 0 is the high bit", 8, []int{0}, []byte{0x80}},
		{"crosses a byte", 12, []int{1, 7, 8, 11}, []byte{0x41, 0x90}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBitmap(tc.n)
			for _, i := range tc.set {
				b.Set(i)
			}
			if string(b) != string(tc.bytes) {
				t.Fatalf("bytes = %x, want %x", []byte(b), tc.bytes)
			}
			for i := range tc.n + 9 {
				want := false
				for _, s := range tc.set {
					want = want || s == i
				}
				if b.Has(i) != want {
					t.Fatalf("Has(%d) = %v", i, b.Has(i))
				}
			}
		})
	}
}

func TestBatchInDoubt(t *testing.T) {
	b := Batch{Slots: 4, Dispatched: NewBitmap(4), Done: NewBitmap(4)}
	b.Dispatched.Set(0)
	b.Dispatched.Set(1)
	b.Done.Set(1)
	b.Done.Set(2)
	for i, want := range []bool{true, false, false, false} {
		if b.InDoubt(i) != want {
			t.Errorf("InDoubt(%d) = %v", i, b.InDoubt(i))
		}
	}
}

func TestClaimStateString(t *testing.T) {
	for s, want := range map[ClaimState]string{Claimed: "claimed", Duplicate: "duplicate", Held: "held", InDoubt: "in_doubt", 0: "unknown"} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", s, s.String(), want)
		}
	}
}
