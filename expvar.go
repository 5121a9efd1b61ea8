package vinequeue

import (
	"errors"
	"expvar"
	"fmt"
	"sync"
)

// ErrExpvarExists is returned by PublishExpvar for a name already in the
// process's expvar registry.
var ErrExpvarExists = errors.New("vinequeue: expvar name already published")

// expvarMu serialises PublishExpvar's check-then-publish, so two of its calls
// with one name cannot both pass the check and make expvar.Publish panic.
var expvarMu sync.Mutex

// PublishExpvar publishes the result of stats under name in the expvar
// registry, which is served as JSON at /debug/vars on http.DefaultServeMux,
// or wherever expvar.Handler() is mounted. Each read calls stats, so the
// value is always current; pass a queue's Stats method:
// PublishExpvar("events", q.Stats). The value is the Stats struct as a JSON
// object, with Level as its number (0 normal, 1 soft, 2 hard).
//
// expvar names are process-global and cannot be removed: publishing a name
// that is already taken returns ErrExpvarExists instead of the panic (and
// global-logger line) of expvar.Publish. The check is race-free against
// other PublishExpvar calls only, not against direct expvar.Publish calls.
func PublishExpvar(name string, stats func() Stats) error {
	if name == "" {
		return invalid("PublishExpvar", "name is empty")
	}
	if stats == nil {
		return invalid("PublishExpvar", "stats func is nil")
	}
	expvarMu.Lock()
	defer expvarMu.Unlock()
	if expvar.Get(name) != nil {
		return fmt.Errorf("%w: %q", ErrExpvarExists, name)
	}
	expvar.Publish(name, expvar.Func(func() any { return stats() }))
	return nil
}
