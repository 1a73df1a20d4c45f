package email

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/tracking"
)

// trackHTML is a ~4 KB newsletter with 6 links, personalised at the top.
var trackHTML = "<html><body><h1>Hello {{name}}</h1>\n" + strings.Repeat(
	"<p>Our autumn collection is in: <a href=\"https://shop.example.com/autumn?utm_source=mail&amp;utm_campaign=fall\">jackets</a>, boots and scarves at member prices.</p>\n", 6) +
	strings.Repeat("<p>See what is new this week in your store, and what your neighbours bought.</p>\n", 14) +
	"<p><a href=\"notifyd:unsubscribe\">Unsubscribe</a></p></body></html>"

func trackSender(b testing.TB) *Sender {
	b.Helper()
	sg, err := tracking.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	links, err := tracking.NewLinks("https://t.example.com", sg)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Host: "127.0.0.1", Port: 2525, TLSMode: TLSNone, From: "News <news@example.com>"}, WithTracking(links))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkBuildTracking is the cost of building one message (headers,
// MIME, quoted-printable, dot-stuffing) with the campaign's tracking off
// and on; the difference is what tracking adds per message.
func BenchmarkBuildTracking(b *testing.B) {
	for _, tc := range []struct {
		name  string
		track channels.Track
	}{
		{"off", 0},
		{"opens", channels.TrackOpens},
		{"opens+clicks+unsubscribe", channels.TrackOpens | channels.TrackClicks | channels.TrackUnsubscribe},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := trackSender(b)
			const n = 64
			msgs := make([]*channels.Message, n)
			for i := range msgs {
				name := fmt.Sprintf("user%d", i)
				msgs[i] = &channels.Message{ID: "fall:" + name + ":email:0", Campaign: "fall", UserID: name, UserKey: uint64(i), To: name + "@example.org", Track: tc.track,
					Mail: &channels.Mail{Subject: "News for " + name, HTML: strings.ReplaceAll(trackHTML, "{{name}}", name), Text: "Hello " + name}}
			}
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out, _, err := s.build(msgs[i%n], now)
				if err != nil {
					b.Fatal(err)
				}
				out.release()
			}
		})
	}
}
