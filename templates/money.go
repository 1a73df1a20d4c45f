package templates

import (
	"math"
	"strconv"
	"strings"
)

// numberFormat is how a locale writes numbers and amounts of money. The
// table is deliberately small (CLDR's common cases): x/text/currency would
// be complete but costs microseconds and allocations per call.
type numberFormat struct {
	group, decimal string
	symbolAfter    bool   // "12,50 €" rather than "€12.50"
	symbolSep      string // between symbol and amount
}

const (
	nbsp       = "\u00a0"
	narrowNbsp = "\u202f"
)

// localeFormatFor picks a format by the locale's language and region,
// falling back to English.
func localeFormatFor(locale string) numberFormat {
	lang, region := splitLocale(locale)
	switch lang + "-" + region {
	case "pt-br":
		return numberFormat{group: ".", decimal: ",", symbolSep: nbsp}
	case "de-ch":
		return numberFormat{group: "’", decimal: ".", symbolSep: nbsp}
	case "es-mx", "es-us":
		return numberFormat{group: ",", decimal: "."}
	case "en-in", "hi-in":
		return numberFormat{group: ",", decimal: "."}
	}
	switch lang {
	case "de", "es", "it", "id", "da":
		return numberFormat{group: ".", decimal: ",", symbolAfter: true, symbolSep: nbsp}
	case "nl":
		return numberFormat{group: ".", decimal: ",", symbolSep: nbsp}
	case "fr":
		return numberFormat{group: narrowNbsp, decimal: ",", symbolAfter: true, symbolSep: nbsp}
	case "pt", "ru", "pl", "sv", "nb", "no", "fi", "cs", "sk", "uk":
		return numberFormat{group: nbsp, decimal: ",", symbolAfter: true, symbolSep: nbsp}
	case "tr":
		return numberFormat{group: ".", decimal: ","}
	}
	return numberFormat{group: ",", decimal: "."}
}

// splitLocale lower-cases "pt_BR"/"pt-BR" into ("pt", "br").
func splitLocale(locale string) (lang, region string) {
	locale = strings.ToLower(strings.ReplaceAll(locale, "_", "-"))
	lang, rest, _ := strings.Cut(locale, "-")
	// Skip a script subtag (zh-Hant-TW).
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(rest, "-")
		if len(part) == 2 || (len(part) == 3 && part[0] >= '0' && part[0] <= '9') {
			return lang, part
		}
	}
	return lang, ""
}

// currencyInfo returns a currency's symbol and minor-unit digits; an unknown
// code is printed as itself with two decimals.
func currencyInfo(code string) (string, int) {
	switch code {
	case "USD":
		return "$", 2
	case "EUR":
		return "€", 2
	case "GBP":
		return "£", 2
	case "BRL":
		return "R$", 2
	case "JPY":
		return "¥", 0
	case "CNY":
		return "CN¥", 2
	case "INR":
		return "₹", 2
	case "KRW":
		return "₩", 0
	case "CAD":
		return "CA$", 2
	case "AUD":
		return "A$", 2
	case "MXN":
		return "MX$", 2
	case "CHF":
		return "CHF", 2
	case "SEK", "NOK", "DKK":
		return "kr", 2
	case "PLN":
		return "zł", 2
	case "TRY":
		return "₺", 2
	case "RUB":
		return "₽", 2
	}
	return code, 2
}

func formatMoney(amount float64, code, locale string) string {
	symbol, decimals := currencyInfo(code)
	f := localeFormatFor(locale)
	num := formatNumber(math.Abs(amount), decimals, f)
	var b strings.Builder
	if amount < 0 && num != formatNumber(0, decimals, f) {
		b.WriteByte('-')
	}
	if f.symbolAfter {
		b.WriteString(num)
		b.WriteString(f.symbolSep)
		b.WriteString(symbol)
		return b.String()
	}
	b.WriteString(symbol)
	b.WriteString(f.symbolSep)
	b.WriteString(num)
	return b.String()
}

func formatNumber(n float64, decimals int, f numberFormat) string {
	s := strconv.FormatFloat(n, 'f', decimals, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	intPart, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	if neg && strings.Trim(s, "0.") != "" {
		b.WriteByte('-')
	}
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteString(f.group)
		}
		b.WriteRune(c)
	}
	if frac != "" {
		b.WriteString(f.decimal)
		b.WriteString(frac)
	}
	return b.String()
}
