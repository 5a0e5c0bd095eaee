package upgrader

import (
	"cmp"
	"slices"
)

// kindMatcher is a registered upgrader that decides image compatibility
// itself, with the connection kind it is registered for.
type kindMatcher struct {
	ImageMatcher
	kind string
}

// matchers returns the registered upgraders that implement ImageMatcher,
// in connection kind order.
func (r *Registry) matchers() []kindMatcher {
	r.mu.RLock()
	var out []kindMatcher
	for kind, u := range r.m {
		if m, ok := u.(ImageMatcher); ok {
			out = append(out, kindMatcher{ImageMatcher: m, kind: kind})
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b kindMatcher) int { return cmp.Compare(a.kind, b.kind) })
	return out
}
