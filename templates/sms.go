package templates

import "unicode/utf16"

// SMS encodings as reported in channels.Text.Encoding.
const (
	EncodingGSM7 = "GSM-7"
	EncodingUCS2 = "UCS-2"
)

// gsmSeptets is the cost of r in the GSM 03.38 alphabet: 1 for the basic
// table, 2 for the extension table (escape + char), 0 when r is not in GSM-7.
func gsmSeptets(r rune) int {
	switch r {
	case '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å',
		'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', 'Æ', 'æ', 'ß', 'É',
		' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/',
		':', ';', '<', '=', '>', '?', '¡', 'Ä', 'Ö', 'Ñ', 'Ü', '§', '¿', 'ä', 'ö', 'ñ', 'ü', 'à':
		return 1
	case '^', '{', '}', '\\', '[', '~', ']', '|', '€', '\f':
		return 2
	}
	if (r >= '0' && r <= '9') || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') {
		return 1
	}
	return 0
}

// SMSEncoding reports how body travels as SMS and in how many parts:
// GSM-7 holds 160 septets in one part or 153 per part of a multipart message
// (an extension character's two septets never straddle parts); anything
// else is UCS-2 with 70 UTF-16 code units in one part or 67 per part (a
// surrogate pair, such as an emoji, never straddles parts).
func SMSEncoding(body string) (encoding string, segments int) {
	if body == "" {
		return EncodingGSM7, 0
	}
	total, gsm := 0, true
	for _, r := range body {
		n := gsmSeptets(r)
		if n == 0 {
			gsm = false
			break
		}
		total += n
	}
	if gsm {
		if total <= 160 {
			return EncodingGSM7, 1
		}
		return EncodingGSM7, countParts(body, 153, func(r rune) int { return gsmSeptets(r) })
	}
	units := 0
	for _, r := range body {
		units += utf16.RuneLen(r)
	}
	if units <= 70 {
		return EncodingUCS2, 1
	}
	return EncodingUCS2, countParts(body, 67, func(r rune) int {
		if n := utf16.RuneLen(r); n > 0 {
			return n
		}
		return 1 // invalid runes travel as U+FFFD
	})
}

func countParts(body string, per int, cost func(rune) int) int {
	parts, used := 1, 0
	for _, r := range body {
		c := cost(r)
		if used+c > per {
			parts++
			used = 0
		}
		used += c
	}
	return parts
}
