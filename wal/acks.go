package wal

import "sort"

// span is an inclusive range of record ids.
type span struct{ lo, hi uint64 }

// ackTracker computes the low-water mark from acknowledgements that may
// arrive out of order (several Send workers finish in any order). mark is
// the highest id such that every id <= mark is acknowledged; spans holds the
// acknowledged ranges above mark+1, sorted, disjoint and never adjacent, so
// with W concurrent workers it stays about W entries long.
type ackTracker struct {
	mark  uint64
	spans []span
}

// ack records ids lo..hi (inclusive) as acknowledged and reports whether
// the mark moved.
func (a *ackTracker) ack(lo, hi uint64) bool {
	if hi < lo || hi <= a.mark {
		return false
	}
	if lo <= a.mark {
		lo = a.mark + 1
	}
	// First span that could touch [lo, hi]: its hi+1 >= lo.
	i := sort.Search(len(a.spans), func(i int) bool { return a.spans[i].hi+1 >= lo })
	j := i
	for j < len(a.spans) && a.spans[j].lo <= hi+1 {
		lo = min(lo, a.spans[j].lo)
		hi = max(hi, a.spans[j].hi)
		j++
	}
	switch {
	case j == i: // no overlap: insert
		a.spans = append(a.spans, span{})
		copy(a.spans[i+1:], a.spans[i:])
		a.spans[i] = span{lo, hi}
	default: // merge spans i..j-1 into one
		a.spans[i] = span{lo, hi}
		a.spans = append(a.spans[:i+1], a.spans[j:]...)
	}
	if a.spans[0].lo != a.mark+1 {
		return false
	}
	a.mark = a.spans[0].hi
	a.spans = append(a.spans[:0], a.spans[1:]...)
	return true
}

// acked reports whether id is acknowledged.
func (a *ackTracker) acked(id uint64) bool {
	if id <= a.mark {
		return true
	}
	i := sort.Search(len(a.spans), func(i int) bool { return a.spans[i].hi >= id })
	return i < len(a.spans) && a.spans[i].lo <= id
}
