package shardgen_test

import (
	"math"
	"testing"
	"unicode"

	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

func TestGeneratorMix(t *testing.T) {
	const n = 20000
	g := shardgen.New(1)
	var p shard.Profile
	segments := map[string]int{}
	scripts := map[string]bool{}
	ageKinds := map[shard.ValueKind]bool{}
	missingFirstName, withAPNs, withWebPush := 0, 0, 0
	for i := range uint64(n) {
		g.Profile(i, &p)
		if err := p.Validate(); err != nil {
			t.Fatalf("profile %d invalid: %v", i, err)
		}
		for _, s := range p.Segments {
			segments[s]++
		}
		if len(p.APNs) > 0 {
			withAPNs++
		}
		if len(p.WebPush) > 0 {
			withWebPush++
		}
		found := false
		for _, a := range p.Attributes {
			switch a.Name {
			case "first_name":
				found = true
				for _, r := range a.Value.Any().(string) {
					for name, table := range map[string]*unicode.RangeTable{"Latin": unicode.Latin, "Cyrillic": unicode.Cyrillic,
						"Han": unicode.Han, "Arabic": unicode.Arabic, "Devanagari": unicode.Devanagari} {
						if unicode.Is(table, r) {
							scripts[name] = true
						}
					}
				}
			case "age":
				ageKinds[a.Value.Kind()] = true
			}
		}
		if !found {
			missingFirstName++
		}
	}
	t.Run("segment densities", func(t *testing.T) {
		for _, s := range shardgen.Segments() {
			got := float64(segments[s.Name]) / n
			if math.Abs(got-s.Density) > 0.01+s.Density*0.1 {
				t.Errorf("segment %s: density %.3f, want about %.3f", s.Name, got, s.Density)
			}
		}
	})
	t.Run("scripts", func(t *testing.T) {
		for _, s := range []string{"Latin", "Cyrillic", "Han", "Arabic", "Devanagari"} {
			if !scripts[s] {
				t.Errorf("no first name in %s script", s)
			}
		}
	})
	t.Run("mixed and missing attributes", func(t *testing.T) {
		if !ageKinds[shard.KindInt] || !ageKinds[shard.KindString] {
			t.Errorf("age kinds %v, want int and string", ageKinds)
		}
		if missingFirstName == 0 || missingFirstName > n/10 {
			t.Errorf("%d profiles without first_name, want a few percent", missingFirstName)
		}
	})
	t.Run("push addresses", func(t *testing.T) {
		if withAPNs < n/10 || withAPNs > n/3 || withWebPush < n/20 || withWebPush > n/5 {
			t.Errorf("%d with APNs, %d with web push of %d", withAPNs, withWebPush, n)
		}
	})
}

func TestGeneratorIsDeterministic(t *testing.T) {
	tests := []struct {
		name      string
		seedA     uint64
		seedB     uint64
		wantEqual bool
	}{
		{"same seed", 5, 5, true},
		{"other seed", 5, 6, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a, b shard.Profile
			equal := true
			for i := range uint64(200) {
				shardgen.New(tc.seedA).Profile(i, &a)
				shardgen.New(tc.seedB).Profile(i, &b)
				if string(shard.AppendJSON(nil, &a)) != string(shard.AppendJSON(nil, &b)) {
					equal = false
				}
			}
			if equal != tc.wantEqual {
				t.Fatalf("equal=%v, want %v", equal, tc.wantEqual)
			}
		})
	}
}
