package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/postbackedge/caddy-postback/alert"
)

// unmarshalAlert reads the postback app's alert block:
//
//	alert {
//		webhook <https://...> {
//			header <name> <value>
//		}
//		min_interval    <duration>
//		max_pending_age <duration>
//	}
//
// webhook, and header inside it, are repeatable; the others are not.
func unmarshalAlert(d *caddyfile.Dispenser) (*Alert, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	al := new(Alert)
	opts := newOptionSet("webhook")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := opts.once(d); err != nil {
			return nil, err
		}
		switch d.Val() {
		case "webhook":
			w, err := unmarshalAlertWebhook(d)
			if err != nil {
				return nil, err
			}
			al.Webhooks = append(al.Webhooks, w)
		case "min_interval":
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			al.MinInterval = dur
		case "max_pending_age":
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			al.MaxPendingAge = dur
		default:
			return nil, d.Errf("unrecognized alert option %q", d.Val())
		}
	}
	if len(al.Webhooks) == 0 {
		return nil, d.Err("alert: at least one webhook is required")
	}
	return al, nil
}

func unmarshalAlertWebhook(d *caddyfile.Dispenser) (AlertWebhook, error) {
	var w AlertWebhook
	if err := oneArg(d, &w.URL, func(v string) error { _, err := alert.CheckURL(v); return err }); err != nil {
		return w, err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() != "header" {
			return w, d.Errf("unrecognized webhook option %q", d.Val())
		}
		var name, value string
		if !d.AllArgs(&name, &value) {
			return w, d.ArgErr()
		}
		if w.Header == nil {
			w.Header = make(http.Header)
		}
		w.Header.Add(name, value)
	}
	return w, nil
}
