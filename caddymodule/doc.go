// Package caddymodule is the only Caddy-facing code of caddy-postback.
package caddymodule
