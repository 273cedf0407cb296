package handlers

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// DefaultMethods is the method policy when none is configured: the NATS
// process gateway warns that GET may get card data logged.
var DefaultMethods = []string{http.MethodPost}

// knownMethods are the methods a postback endpoint may be configured to
// accept. CONNECT and TRACE are left out on purpose: neither makes sense in
// front of a script, and TRACE echoes the request (and its secrets) back.
var knownMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// MethodPolicy is the set of request methods let through. Nothing is
// implied: HEAD is not allowed with GET, nor OPTIONS for CORS preflights,
// unless listed.
type MethodPolicy struct {
	allowed []string // upper case, deduplicated, in configured order
}

// ParseMethods builds a policy from configured method names. Names are
// case-insensitive in the configuration (post = POST); an empty list means
// DefaultMethods. An unknown name is an error that names it.
func ParseMethods(methods []string) (*MethodPolicy, error) {
	if len(methods) == 0 {
		methods = DefaultMethods
	}
	p := &MethodPolicy{allowed: make([]string, 0, len(methods))}
	for _, m := range methods {
		up := strings.ToUpper(m)
		if !slices.Contains(knownMethods, up) {
			return nil, fmt.Errorf("method %q: not one of %s", m, strings.Join(knownMethods, ", "))
		}
		if !slices.Contains(p.allowed, up) {
			p.allowed = append(p.allowed, up)
		}
	}
	return p, nil
}

// Allowed returns the allowed methods, as sent in an Allow header.
func (p *MethodPolicy) Allowed() []string { return slices.Clone(p.allowed) }

// Check returns nil when method is allowed, else a 405 Denial carrying the
// Allow list. Request methods are case-sensitive (RFC 9110, section 9.1):
// "post" is not POST.
func (p *MethodPolicy) Check(method string) *Denial {
	if slices.Contains(p.allowed, method) {
		return nil
	}
	return &Denial{Status: http.StatusMethodNotAllowed, Reason: ReasonMethod, Allow: p.Allowed()}
}
