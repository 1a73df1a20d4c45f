package templates

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/notifyd/notifyd/channels"
)

// countingProfile records which attributes a render reads.
type countingProfile struct {
	*fakeProfile
	mu    sync.Mutex
	reads []string
}

func (p *countingProfile) Attr(name string) (any, bool) {
	p.mu.Lock()
	p.reads = append(p.reads, name)
	p.mu.Unlock()
	return p.fakeProfile.Attr(name)
}

func TestBindingIsLazy(t *testing.T) {
	attrs := map[string]any{}
	for i := range 200 {
		attrs[fmt.Sprintf("a%d", i)] = int64(i)
	}
	attrs["first_name"] = "Ann"
	tests := []struct {
		name, src string
		wantReads []string
	}{
		{name: "fast path", src: `{{ profile.first_name }} {{ profile.a7 | default: profile.a9 }} {{ profile.id }}`, wantReads: []string{"first_name", "a7", "a9"}},
		{name: "engine path", src: `{% if profile.a3 > 1 %}{{ profile.first_name }}{% endif %}`, wantReads: []string{"a3", "first_name"}},
		{name: "default reads its fallback", src: `{{ profile.nope | default: profile.a9 }}`, wantReads: []string{"nope", "a9"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Compile(Spec{Content: Content{Push: &PushSpec{Body: tc.src}}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			p := &countingProfile{fakeProfile: newProfile("u", "", "", attrs)}
			var dst channels.Push
			if err := s.RenderPush(p, nil, &dst); err != nil {
				t.Fatal(err)
			}
			slices.Sort(p.reads)
			want := slices.Clone(tc.wantReads)
			slices.Sort(want)
			for _, r := range p.reads {
				if !slices.Contains(want, r) {
					t.Fatalf("read %q; reads %v, want only %v", r, p.reads, want)
				}
			}
			for _, w := range want {
				if !slices.Contains(p.reads, w) {
					t.Fatalf("did not read %q; reads %v", w, p.reads)
				}
			}
		})
	}
}

// TestConcurrentRenders shares one Set between workers (run with -race).
func TestConcurrentRenders(t *testing.T) {
	s, err := Compile(Spec{
		Content: Content{
			Push:  &PushSpec{Title: `Hi {{ profile.first_name }}`, Body: `{% for i in (1..3) %}{{ i }}{% endfor %} {{ profile.signup | date: "%H:%M" }}`},
			Email: &EmailSpec{Subject: "s {{ profile.id }}", HTML: "<p>{{ profile.html }}</p>"},
		},
		Locales: map[string]Content{"de": {Push: &PushSpec{Title: `Hallo {{ profile.first_name }}`}}},
	}, Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var push channels.Push
			var mail channels.Mail
			for i := range 200 {
				p := hostileProfile()
				p.id = fmt.Sprintf("u%d-%d", w, i)
				if i%2 == 0 {
					p.locale, p.tz = "de-DE", "Europe/Berlin"
				}
				if err := s.RenderPush(p, nil, &push); err != nil {
					errs <- err
					return
				}
				if err := s.RenderMail(p, nil, &mail); err != nil {
					errs <- err
					return
				}
				wantTitle, wantBody := "Hi ann", "123 18:30"
				if i%2 == 0 {
					wantTitle, wantBody = "Hallo ann", "123 00:30"
				}
				if push.Title != wantTitle || push.Body != wantBody || mail.Subject != "s "+p.id {
					errs <- fmt.Errorf("worker %d render %d: %q %q %q", w, i, push.Title, push.Body, mail.Subject)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
