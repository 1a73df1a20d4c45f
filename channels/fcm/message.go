package fcm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"firebase.google.com/go/v4/messaging"

	"github.com/notifyd/notifyd/channels"
)

// buildMessage turns a rendered push into an FCM v1 message. It answers with
// a *channels.Error for what FCM would reject, so one bad message never costs
// its SendEach batch (firebase fails the whole call for one invalid message).
func buildMessage(m *channels.Message, now time.Time, androidChannel string) (*messaging.Message, error) {
	if m == nil || m.Push == nil {
		return nil, channels.Permanent(channels.ReasonInvalid, "", errors.New("build message: no push content"))
	}
	if m.To == "" || strings.ContainsAny(m.To, " \t\r\n/") {
		return nil, channels.Permanent(channels.ReasonInvalid, "", errors.New("build message: registration token is empty or malformed"))
	}
	var ttl time.Duration
	if !m.Deadline.IsZero() {
		ttl = m.Deadline.Sub(now).Truncate(time.Second)
		if ttl < time.Second {
			return nil, channels.Permanent(channels.ReasonExpired, "", errors.New("build message: deadline passed"))
		}
		ttl = min(ttl, maxTTL)
	}
	p := m.Push
	if p.ImageURL != "" {
		if _, err := url.ParseRequestURI(p.ImageURL); err != nil {
			return nil, channels.Permanent(channels.ReasonInvalid, "", errors.New("build message: image URL is not an absolute URL"))
		}
	}
	data, err := dataMap(p.Data)
	if err != nil {
		return nil, channels.Permanent(channels.ReasonInvalid, "", fmt.Errorf("build message: %w", err))
	}
	if p.DeepLink != "" {
		if data == nil {
			data = make(map[string]string, 1)
		}
		if _, taken := data["deep_link"]; !taken {
			data["deep_link"] = p.DeepLink
		}
	}

	visible := p.Title != "" || p.Body != "" || p.ImageURL != ""
	fm := &messaging.Message{Token: m.To, Data: data}
	if visible {
		fm.Notification = &messaging.Notification{Title: p.Title, Body: p.Body, ImageURL: p.ImageURL}
	}

	priority, apnsPriority, urgency := "normal", "5", "normal"
	if m.High {
		priority, apnsPriority, urgency = "high", "10", "high"
	}
	android := &messaging.AndroidConfig{CollapseKey: p.CollapseID, Priority: priority}
	if ttl > 0 {
		android.TTL = &ttl
	}
	if visible && (p.Sound != "" || androidChannel != "" || p.Badge != nil) {
		android.Notification = &messaging.AndroidNotification{Sound: p.Sound, ChannelID: androidChannel, NotificationCount: p.Badge}
	}
	fm.Android = android

	pushType := p.PushType
	if pushType == "" {
		pushType = "alert"
		if !visible {
			pushType = "background"
		}
	}
	if pushType == "background" {
		apnsPriority = "5" // APNs rejects priority 10 for background pushes.
	}
	apnsHeaders := map[string]string{"apns-priority": apnsPriority, "apns-push-type": pushType}
	if !m.Deadline.IsZero() {
		apnsHeaders["apns-expiration"] = strconv.FormatInt(m.Deadline.Unix(), 10)
	}
	if p.CollapseID != "" && len(p.CollapseID) <= 64 {
		apnsHeaders["apns-collapse-id"] = p.CollapseID
	}
	aps := &messaging.Aps{Badge: p.Badge, Sound: p.Sound, ThreadID: p.ThreadID, MutableContent: p.ImageURL != "", ContentAvailable: !visible}
	fm.APNS = &messaging.APNSConfig{Headers: apnsHeaders, Payload: &messaging.APNSPayload{Aps: aps}}
	if p.ImageURL != "" {
		fm.APNS.FCMOptions = &messaging.APNSFCMOptions{ImageURL: p.ImageURL}
	}

	wpHeaders := map[string]string{"Urgency": urgency}
	if ttl > 0 {
		wpHeaders["TTL"] = strconv.FormatInt(int64(ttl/time.Second), 10)
	}
	if webPushTopic(p.CollapseID) {
		wpHeaders["Topic"] = p.CollapseID
	}
	fm.Webpush = &messaging.WebpushConfig{Headers: wpHeaders}
	if strings.HasPrefix(p.DeepLink, "https://") {
		// firebase rejects a non-https link; other schemes travel in data only.
		fm.Webpush.FCMOptions = &messaging.WebpushFCMOptions{Link: p.DeepLink}
	}
	return fm, nil
}

// webPushTopic reports whether s is a valid RFC 8030 Topic (≤ 32 base64url characters).
func webPushTopic(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// dataMap turns a JSON object into FCM's string map: strings stay as they
// are, other values travel JSON-encoded. FCM rejects reserved keys, so they
// are refused here rather than failing at the provider.
func dataMap(raw json.RawMessage) (map[string]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, errors.New("push data is not a JSON object")
	}
	out := make(map[string]string, len(obj))
	for k, v := range obj {
		if k == "" || k == "from" || k == "notification" || k == "message_type" ||
			strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.") {
			return nil, fmt.Errorf("push data key %q is reserved by FCM", k)
		}
		if len(v) > 0 && v[0] == '"' {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fmt.Errorf("decode push data key %q: %w", k, err)
			}
			out[k] = s
			continue
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, v); err != nil {
			return nil, fmt.Errorf("encode push data key %q: %w", k, err)
		}
		out[k] = buf.String()
	}
	return out, nil
}
