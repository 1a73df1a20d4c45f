package templates

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/channels"
)

// docExample is the campaign in docs/templates.md; keep them in step.
const docExample = `{
  "missing": "skip",
  "limits": {"max_field_bytes": 65536, "max_html_bytes": 1048576, "max_steps": 10000},
  "push": {
    "title": "Hi {{ profile.first_name | default: \"there\" }}!",
    "body": "Your {{ event.plan }} renews on {{ event.renews_at | date: \"%B %-d\" }}.",
    "sound": "default",
    "badge": "{{ profile.unread }}",
    "deep_link": "myapp://billing?plan={{ event.plan | url_encode }}",
    "data": {"plan": "{{ event.plan }}", "screen": "billing"},
    "collapse_id": "renewal-{{ event.plan }}"
  },
  "email": {
    "from": "Acme <billing@acme.example>",
    "subject": "{{ profile.first_name | default: \"Hello\" }}, your receipt",
    "html": "<p>Hi {{ profile.first_name }},</p><p>You paid {{ event.amount | money: \"EUR\" }}.</p>",
    "text": "Hi {{ profile.first_name }}, you paid {{ event.amount | money: \"EUR\" }}.",
    "headers": {"X-Campaign": "{{ campaign.id }}"},
    "list_unsubscribe": "https://acme.example/u/{{ profile.id | url_encode }}",
    "list_unsubscribe_one_click": true
  },
  "sms": {"body": "Acme: {{ event.amount | money: \"EUR\" }} received. Thanks {{ profile.first_name }}!"},
  "webpush": {"title": "Receipt", "body": "{{ event.amount | money }} received", "icon": "https://acme.example/i.png",
              "url": "https://acme.example/billing", "tag": "receipt"},
  "webhook": {"method": "POST", "url": "https://hooks.acme.example/paid",
              "headers": {"X-Campaign": "{{ campaign.id }}"},
              "body": "{\"user\": \"{{ profile.id }}\", \"amount\": {{ event.amount }}}"},
  "locales": {
    "pt-BR": {"push": {"title": "Oi {{ profile.first_name | default: \"você\" }}!"}},
    "pt":    {"push": {"title": "Olá {{ profile.first_name | default: \"você\" }}!"}}
  }
}
`

func TestDocumentedExample(t *testing.T) {
	var spec Spec
	if err := json.Unmarshal([]byte(docExample), &spec); err != nil {
		t.Fatal(err)
	}
	s, err := Compile(spec, Options{Campaign: Campaign{ID: "c-42"}, Now: fixedNow, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	p := newProfile("u-7", "pt-BR", "America/Sao_Paulo", map[string]any{"first_name": "Bia", "unread": int64(4)})
	ev := map[string]any{"plan": "pro plus", "renews_at": "2024-07-01T02:00:00Z", "amount": 49.9}
	var push channels.Push
	if err := s.RenderPush(p, ev, &push); err != nil {
		t.Fatal(err)
	}
	if push.Title != "Oi Bia!" || push.Body != "Your pro plus renews on June 30." || *push.Badge != 4 ||
		push.DeepLink != "myapp://billing?plan=pro+plus" || string(push.Data) != `{"plan":"pro plus","screen":"billing"}` {
		t.Fatalf("push = %+v data %s", push, push.Data)
	}
	var mail channels.Mail
	if err := s.RenderMail(p, ev, &mail); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mail.HTML, "€\u00a049,90") || mail.Headers["X-Campaign"] != "c-42" || !mail.ListUnsubscribeOneClick {
		t.Fatalf("mail = %+v", mail)
	}
	var text channels.Text
	if err := s.RenderText(p, ev, &text); err != nil {
		t.Fatal(err)
	}
	if text.Body != "Acme: € 49,90 received. Thanks Bia!" || text.Encoding != EncodingGSM7 || text.Segments != 1 {
		t.Fatalf("sms = %+v", text)
	}
	var hook channels.Hook
	if err := s.RenderHook(p, ev, &hook); err != nil {
		t.Fatal(err)
	}
	if string(hook.Body) != `{"user": "u-7", "amount": 49.9}` || hook.Headers["Content-Type"] != "application/json" {
		t.Fatalf("hook = %+v body %s", hook, hook.Body)
	}
}
