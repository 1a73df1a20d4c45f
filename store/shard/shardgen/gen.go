package shardgen

import (
	"crypto/ecdh"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/notifyd/notifyd/store/shard"
)

// Segment is a segment the generator fills and its expected density.
type Segment struct {
	Name    string
	Density float64
}

// Segments returns the segments the generator assigns, densest first.
func Segments() []Segment {
	return []Segment{{"all", 1.0}, {"newsletter", 0.90}, {"active_30d", 0.50}, {"email_engaged", 0.35},
		{"lapsed_90d", 0.20}, {"cart_abandoners", 0.10}, {"high_intent", 0.05}, {"new_7d", 0.03}, {"vip", 0.01}}
}

// CSVAttrs are the attribute columns (NAME or NAME:TYPE) for CSV output;
// age and score have no declared type because their type varies by row.
func CSVAttrs() []string {
	return []string{"first_name:string", "last_name:string", "tier:string", "ltv:float", "orders:int",
		"vip:bool", "signup:time", "last_seen:time", "city:string", "age", "score", "app_version:string",
		"gender:string", "country:string", "favorite_category:string", "last_purchase:time", "total_spent:float",
		"email_opens_30d:int", "utm_source:string", "marketing_optin:bool"}
}

type region struct {
	locale, zone, country, cc string
	first, last, cities       []string
	phoneDigits               int
}

// Names in Latin, Cyrillic, CJK, Arabic and Devanagari scripts.
func regions() []region {
	return []region{
		{"en-US", "America/New_York", "US", "1", []string{"Ann", "James", "Mary", "Robert", "Linda", "Michael", "Emily", "David"}, []string{"Smith", "Johnson", "Brown", "Miller", "Davis", "Wilson"}, []string{"New York", "Boston", "Chicago"}, 10},
		{"en-US", "America/Los_Angeles", "US", "1", []string{"Olivia", "Noah", "Ava", "Liam", "Mia", "Ethan"}, []string{"Garcia", "Martinez", "Lee", "Walker", "Hall"}, []string{"Los Angeles", "San Francisco", "Seattle"}, 10},
		{"pt-BR", "America/Sao_Paulo", "BR", "55", []string{"João", "Maria", "Ana", "Pedro", "Lucas", "Júlia"}, []string{"Silva", "Santos", "Oliveira", "Souza", "Lima"}, []string{"São Paulo", "Rio de Janeiro", "Belo Horizonte"}, 11},
		{"ru-RU", "Europe/Moscow", "RU", "7", []string{"Александр", "Мария", "Дмитрий", "Анна", "Сергей", "Ольга"}, []string{"Иванов", "Смирнова", "Кузнецов", "Попова", "Волков"}, []string{"Москва", "Санкт-Петербург", "Казань"}, 10},
		{"zh-CN", "Asia/Shanghai", "CN", "86", []string{"伟", "芳", "娜", "敏", "静", "磊"}, []string{"王", "李", "张", "刘", "陈"}, []string{"上海", "北京", "深圳"}, 11},
		{"ja-JP", "Asia/Tokyo", "JP", "81", []string{"陽翔", "結衣", "蓮", "さくら", "大翔"}, []string{"佐藤", "鈴木", "高橋", "田中"}, []string{"東京", "大阪", "京都"}, 10},
		{"ar-EG", "Africa/Cairo", "EG", "20", []string{"محمد", "فاطمة", "أحمد", "مريم", "علي"}, []string{"حسن", "إبراهيم", "عبد الله", "سعيد"}, []string{"القاهرة", "الإسكندرية", "الجيزة"}, 10},
		{"hi-IN", "Asia/Kolkata", "IN", "91", []string{"आरव", "अनन्या", "विहान", "दिया", "अर्जुन"}, []string{"शर्मा", "वर्मा", "पटेल", "सिंह"}, []string{"मुंबई", "दिल्ली", "बेंगलुरु"}, 10},
		{"de-DE", "Europe/Berlin", "DE", "49", []string{"Lukas", "Sophie", "Jürgen", "Lena", "Felix"}, []string{"Müller", "Schmidt", "Schneider", "Fischer"}, []string{"Berlin", "München", "Hamburg"}, 11},
		{"fr-FR", "Europe/Paris", "FR", "33", []string{"Léa", "Hugo", "Chloé", "Louis", "Inès"}, []string{"Martin", "Bernard", "Dubois", "Lefèvre"}, []string{"Paris", "Lyon", "Marseille"}, 9},
	}
}

// vocabulary holds the generator's word lists (Latin stems for email local
// parts, mail domains, tiers, app versions).
type vocabulary struct {
	emailStems, domains, tiers, versions, genders, categories, sources []string
}

func newVocabulary() vocabulary {
	return vocabulary{
		emailStems: []string{"ann", "james", "maria", "alex", "wei", "yui", "mohamed", "aarav", "lukas", "lea", "sam", "kim", "noah", "olga", "ravi"},
		domains:    []string{"gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com", "mail.ru", "qq.com", "proton.me", "example.com", "gmx.de"},
		tiers:      []string{"bronze", "silver", "gold", "platinum"},
		versions:   []string{"5.12.3", "5.12.2", "5.11.0", "5.10.4", "4.9.9"},
		genders:    []string{"female", "male", "non_binary", "undisclosed"},
		categories: []string{"shoes", "electronics", "books", "beauty", "home", "toys", "sports", "grocery"},
		sources:    []string{"google", "facebook", "instagram", "tiktok", "newsletter", "referral", "organic"},
	}
}

// Generator produces profile i deterministically from its seed, so profiles
// can be made in any order and in parallel.
type Generator struct {
	seed     uint64
	regions  []region
	vocab    vocabulary
	segments []Segment
	base     time.Time
}

// New returns a generator for seed.
func New(seed uint64) *Generator {
	return &Generator{seed: seed, regions: regions(), vocab: newVocabulary(), segments: Segments(), base: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}
}

// ID returns the external id of profile i.
func ID(i uint64) string { return "u-" + strconv.FormatUint(i, 10) }

// Profile fills p with profile number i.
func (g *Generator) Profile(i uint64, p *shard.Profile) {
	rng := rand.New(rand.NewPCG(g.seed, i))
	p.Reset()
	p.ID = ID(i)
	reg := &g.regions[rng.IntN(len(g.regions))]
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	first, last := pick(reg.first), pick(reg.last)

	if rng.Float64() < 0.92 {
		p.Email = fmt.Sprintf("%s.%d@%s", pick(g.vocab.emailStems), i, pick(g.vocab.domains))
	}
	if rng.Float64() < 0.75 {
		n := rng.Int64N(9*pow10(reg.phoneDigits-1)) + pow10(reg.phoneDigits-1)
		p.Phone = "+" + reg.cc + strconv.FormatInt(n, 10)
	}
	// Platform mix of an e-commerce CRM: iOS 25%, Android 30%, the rest
	// web/email only; a third of app users never granted push, some have
	// several devices.
	switch x := rng.Float64(); {
	case x < 0.25:
		for range deviceCount(rng) {
			p.APNs = append(p.APNs, randHex(rng, 32))
		}
	case x < 0.55:
		for range deviceCount(rng) {
			p.FCM = append(p.FCM, fcmToken(rng))
		}
	}
	if rng.Float64() < 0.08 {
		p.WebPush = append(p.WebPush, webPush(rng))
	}
	if rng.Float64() < 0.95 {
		p.Locale = reg.locale
	}
	if rng.Float64() < 0.90 {
		p.TimeZone = reg.zone
	}
	p.Consent = shard.Consents{
		Email:   consent(rng, 0.70, 0.10),
		SMS:     consent(rng, 0.40, 0.30),
		Push:    consent(rng, 0.60, 0.15),
		WebPush: consent(rng, 0.20, 0.10),
	}

	signup := g.base.Add(-time.Duration(rng.Int64N(int64(5 * 365 * 24 * time.Hour)))).Truncate(time.Second)
	attr := func(share float64, name string, v func() shard.Value) {
		if rng.Float64() < share {
			p.Attributes = append(p.Attributes, shard.Attribute{Name: name, Value: v()})
		}
	}
	attr(0.97, "first_name", func() shard.Value { return shard.StringValue(first) })
	attr(0.90, "last_name", func() shard.Value { return shard.StringValue(last) })
	attr(0.80, "tier", func() shard.Value { return shard.StringValue(g.vocab.tiers[min(int(rng.ExpFloat64()), 3)]) })
	attr(0.70, "ltv", func() shard.Value { return shard.FloatValue(float64(rng.IntN(500000)) / 100) })
	attr(0.75, "orders", func() shard.Value { return shard.IntValue(int64(rng.IntN(200))) })
	attr(0.60, "vip", func() shard.Value { return shard.BoolValue(rng.IntN(10) == 0) })
	attr(0.95, "signup", func() shard.Value { return shard.TimeValue(signup) })
	attr(0.85, "last_seen", func() shard.Value {
		return shard.TimeValue(signup.Add(time.Duration(rng.Int64N(int64(g.base.Sub(signup)) + 1))).Truncate(time.Second))
	})
	attr(0.60, "city", func() shard.Value { return shard.StringValue(pick(reg.cities)) })
	// Mixed types for one attribute, as real imports have.
	attr(0.50, "age", func() shard.Value {
		if rng.IntN(20) == 0 {
			return shard.StringValue("unknown")
		}
		return shard.IntValue(int64(18 + rng.IntN(60)))
	})
	attr(0.40, "score", func() shard.Value {
		if rng.IntN(2) == 0 {
			return shard.IntValue(int64(rng.IntN(100)))
		}
		return shard.FloatValue(float64(rng.IntN(10000)) / 100)
	})
	attr(0.65, "app_version", func() shard.Value { return shard.StringValue(pick(g.vocab.versions)) })
	attr(0.60, "gender", func() shard.Value { return shard.StringValue(pick(g.vocab.genders)) })
	attr(0.95, "country", func() shard.Value { return shard.StringValue(reg.country) })
	attr(0.50, "favorite_category", func() shard.Value { return shard.StringValue(pick(g.vocab.categories)) })
	attr(0.55, "last_purchase", func() shard.Value {
		return shard.TimeValue(signup.Add(time.Duration(rng.Int64N(int64(g.base.Sub(signup)) + 1))).Truncate(time.Second))
	})
	attr(0.55, "total_spent", func() shard.Value { return shard.FloatValue(float64(rng.IntN(2000000)) / 100) })
	attr(0.70, "email_opens_30d", func() shard.Value { return shard.IntValue(int64(rng.IntN(40))) })
	attr(0.40, "utm_source", func() shard.Value { return shard.StringValue(pick(g.vocab.sources)) })
	attr(0.80, "marketing_optin", func() shard.Value { return shard.BoolValue(rng.IntN(4) != 0) })

	for _, s := range g.segments {
		if s.Density >= 1 || rng.Float64() < s.Density {
			p.Segments = append(p.Segments, s.Name)
		}
	}
}

func pow10(n int) int64 {
	v := int64(1)
	for range n {
		v *= 10
	}
	return v
}

func deviceCount(rng *rand.Rand) int {
	switch x := rng.Float64(); {
	case x < 0.33:
		return 0
	case x < 0.85:
		return 1
	case x < 0.97:
		return 2
	}
	return 3
}

func consent(rng *rand.Rand, granted, denied float64) shard.Consent {
	switch x := rng.Float64(); {
	case x < granted:
		return shard.ConsentGranted
	case x < granted+denied:
		return shard.ConsentDenied
	}
	return shard.ConsentUnknown
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func randHex(rng *rand.Rand, n int) string { return hex.EncodeToString(randBytes(rng, n)) }

// fcmToken has the shape of a real registration token: an instance id, a
// colon, then an APA91b payload (about 163 characters in all).
func fcmToken(rng *rand.Rand) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString(randBytes(rng, 16))[:22] + ":APA91b" + enc.EncodeToString(randBytes(rng, 101))[:134]
}

// webPushKeys are valid P-256 public keys (the writer checks the point):
// deriving one costs ~20 µs, so profiles draw from a fixed set.
var webPushKeys = sync.OnceValue(func() [][]byte {
	keys := make([][]byte, 64)
	for i := range keys {
		var d [32]byte
		d[30], d[31] = byte(i>>8), byte(i+1)
		k, err := ecdh.P256().NewPrivateKey(d[:])
		if err != nil {
			panic(err)
		}
		keys[i] = k.PublicKey().Bytes()
	}
	return keys
})

func webPush(rng *rand.Rand) shard.WebPushSubscription {
	enc := base64.RawURLEncoding
	keys := webPushKeys()
	key := keys[rng.IntN(len(keys))]
	var endpoint string
	if rng.IntN(3) == 0 {
		endpoint = "https://updates.push.services.mozilla.com/wpush/v2/" + enc.EncodeToString(randBytes(rng, 96))
	} else {
		endpoint = "https://fcm.googleapis.com/fcm/send/" + enc.EncodeToString(randBytes(rng, 16))[:22] + ":APA91b" + enc.EncodeToString(randBytes(rng, 101))[:134]
	}
	return shard.WebPushSubscription{Endpoint: endpoint, P256dh: enc.EncodeToString(key), Auth: enc.EncodeToString(randBytes(rng, 16))}
}
