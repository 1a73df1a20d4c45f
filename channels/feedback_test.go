package channels_test

import (
	"context"
	"testing"

	"github.com/notifyd/notifyd/channels"
)

func TestMemoryFeedbackLimit(t *testing.T) {
	m := &channels.MemoryFeedback{Limit: 3}
	for i := range 10 {
		if err := m.RecordFeedback(context.Background(), []channels.Feedback{{UserKey: uint64(i)}}); err != nil {
			t.Fatal(err)
		}
		if want := min(i+1, 3); m.Len() != want {
			t.Fatalf("after %d records Len = %d, want %d", i+1, m.Len(), want)
		}
	}
	all := m.All()
	if all[0].UserKey != 7 || all[2].UserKey != 9 {
		t.Fatalf("kept %v, want the newest three (7, 8, 9)", all)
	}
}
