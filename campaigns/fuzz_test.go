package campaigns_test

import (
	"regexp"
	"testing"

	"github.com/notifyd/notifyd/campaigns"
)

// goInternals are what an API error must never show: Go type names and
// struct paths (issue 12, item 13).
var goInternals = regexp.MustCompile(`interface \{\}|map\[string\]|\bcampaigns\.|\btemplates\.|\bchannels\.|\bjson: cannot|\bstruct\b|\.\.|Go struct field`)

// FuzzDecodeAPI feeds the admin API's request bodies (campaign, flow,
// triggers) to their decoders: no input may panic them, and every refusal
// must read as the API, not as Go.
func FuzzDecodeAPI(f *testing.F) {
	for _, s := range []string{
		body, welcomeFlow, delayedFlow,
		`{"flow":"welcome","user_id":"u-1","properties":{"code":"X"}}`,
		`{"triggers":[{"segment":"s","user_id":"u"},{"event":"e","user_id":"v","idempotency_key":"k"}]}`,
		`{"user_id":"u","properties":{"note":"triggers"}}`,
		`{"id":"c","segment":"all","channels":["sms"],"ttl":1e20,"content":{"sms":{"body":"x","evil":1}}}`,
		`{"id":"c","segment":"all","channels":["webhook"],"send_at":"tomorrow","content":{"webhook":{"url":"http://[::1%25lo]/","body":{"a":[1,{"b":null}]}}}}`,
		`{"id":"f","trigger":{"event":"e"},"delay":"-1s","reentry":"99999999999h","channels":["email"],"content":{"email":{"from":"a@b","subject":"{{ (1..100000000000) | reverse | first }}"}}}`,
		`{"id":"ab","segment":"all","channels":["sms"],"holdout":10,"content":{"sms":{"body":"x"}},"variants":[{"id":"A","weight":1},{"id":"B","weight":2,"content":{"sms":{"body":"y"},"locales":{"pt":{"sms":{"body":"z"}}}}}],"winner":{"after":"2h","metric":"sent_rate","test_percent":20}}`,
		`{"id":"ab.winner","segment":"all","channels":["sms"],"content":{"sms":{"body":"x"}},"winner_of":{"campaign":"ab","variant":"A","test_percent":1e400}}`,
		`[]`, `null`, `{"triggers":null}`, `{"id":1}`, "\xef\xbb\xbf{}", `{"a":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(what string, err error) {
			if err != nil && goInternals.MatchString(err.Error()) {
				t.Fatalf("%s error shows Go internals: %v", what, err)
			}
		}
		_, err := campaigns.DecodeCampaign(b)
		check("campaign", err)
		_, err = campaigns.DecodeFlow(b)
		check("flow", err)
		_, err = campaigns.DecodeTriggers(b)
		check("triggers", err)
	})
}
