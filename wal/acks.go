package wal

import "sort"

// span is an inclusive range of record ids.
type span struct{ lo, hi uint64 }

// spanSet is a set of record ids kept as sorted, disjoint, non-adjacent
// spans. Acknowledgements arrive roughly in id order (several Send workers
// finishing in any order), so the set stays a handful of spans long and an
// add is usually an extension of the last span.
type spanSet struct {
	spans []span
}

// add puts ids lo..hi (inclusive) in the set and reports whether any of
// them was new.
func (s *spanSet) add(lo, hi uint64) bool {
	if hi < lo {
		return false
	}
	n := len(s.spans)
	if n == 0 || lo > s.spans[n-1].hi+1 {
		s.spans = append(s.spans, span{lo, hi})
		return true
	}
	if last := &s.spans[n-1]; lo >= last.lo {
		if hi <= last.hi {
			return false
		}
		last.hi = hi // lo <= last.hi+1: extends the last span
		return true
	}
	// First span that could touch [lo, hi]: its hi+1 >= lo.
	i := sort.Search(n, func(i int) bool { return s.spans[i].hi+1 >= lo })
	if i < n && s.spans[i].lo <= lo && hi <= s.spans[i].hi {
		return false
	}
	j := i
	for j < n && s.spans[j].lo <= hi+1 {
		lo = min(lo, s.spans[j].lo)
		hi = max(hi, s.spans[j].hi)
		j++
	}
	if j == i { // no overlap: insert
		s.spans = append(s.spans, span{})
		copy(s.spans[i+1:], s.spans[i:])
		s.spans[i] = span{lo, hi}
		return true
	}
	s.spans[i] = span{lo, hi} // merge spans i..j-1 into one
	s.spans = append(s.spans[:i+1], s.spans[j:]...)
	return true
}

// addAll adds every span of o.
func (s *spanSet) addAll(o []span) {
	for _, sp := range o {
		s.add(sp.lo, sp.hi)
	}
}

// contains reports whether id is in the set.
// without returns s less id.
func (s *spanSet) without(id uint64) spanSet {
	var out spanSet
	for _, sp := range s.spans {
		if id < sp.lo || id > sp.hi {
			out.add(sp.lo, sp.hi)
			continue
		}
		if id > sp.lo {
			out.add(sp.lo, id-1)
		}
		if id < sp.hi {
			out.add(id+1, sp.hi)
		}
	}
	return out
}

func (s *spanSet) contains(id uint64) bool {
	i := sort.Search(len(s.spans), func(i int) bool { return s.spans[i].hi >= id })
	return i < len(s.spans) && s.spans[i].lo <= id
}

// count returns how many ids of [lo, hi] are in the set.
func (s *spanSet) count(lo, hi uint64) uint64 {
	if hi < lo {
		return 0
	}
	var n uint64
	i := sort.Search(len(s.spans), func(i int) bool { return s.spans[i].hi >= lo })
	for ; i < len(s.spans) && s.spans[i].lo <= hi; i++ {
		n += min(hi, s.spans[i].hi) - max(lo, s.spans[i].lo) + 1
	}
	return n
}

// missing returns the ids of [lo, hi] that are not in the set, as spans.
func (s *spanSet) missing(lo, hi uint64) []span {
	var out []span
	if hi < lo {
		return nil
	}
	next := lo
	i := sort.Search(len(s.spans), func(i int) bool { return s.spans[i].hi >= lo })
	for ; i < len(s.spans) && s.spans[i].lo <= hi; i++ {
		if s.spans[i].lo > next {
			out = append(out, span{next, s.spans[i].lo - 1})
		}
		if s.spans[i].hi >= hi {
			return out
		}
		next = s.spans[i].hi + 1
	}
	return append(out, span{next, hi})
}

// mark returns the highest id such that every id from 1 to it is in the
// set (0 if 1 is not).
func (s *spanSet) mark() uint64 {
	if len(s.spans) == 0 || s.spans[0].lo != 1 {
		return 0
	}
	return s.spans[0].hi
}

// max returns the highest id in the set (0 if empty).
func (s *spanSet) max() uint64 {
	if len(s.spans) == 0 {
		return 0
	}
	return s.spans[len(s.spans)-1].hi
}

// size returns how many ids are in the set.
func (s *spanSet) size() uint64 {
	var n uint64
	for _, sp := range s.spans {
		n += sp.hi - sp.lo + 1
	}
	return n
}

// take returns the spans and empties the set.
func (s *spanSet) take() []span {
	out := s.spans
	s.spans = nil
	return out
}

// clone returns a copy of the spans.
func (s *spanSet) clone() []span { return append([]span(nil), s.spans...) }

// itemsDone is one item entry of the ack log: items [off, off+n) of
// record id are done with.
type itemsDone struct {
	id     uint64
	off, n uint32
}

// partialAcks holds the items done with of records that are not yet
// acknowledged whole: only a record partly acknowledged has an entry, so
// it is bounded by the records in flight. A record's items are kept as a
// spanSet of item indexes (inclusive), which stays a span or two long
// because a record's items are delivered roughly in order.
type partialAcks struct {
	m      map[uint64]*spanSet
	ranges int // spans over all records: the item entries a rewrite writes
}

// add marks items [off, off+n) of record id done and returns how many of
// them were not before.
func (p *partialAcks) add(id uint64, off, n int) int {
	if n <= 0 {
		return 0
	}
	if p.m == nil {
		p.m = make(map[uint64]*spanSet)
	}
	set := p.m[id]
	if set == nil {
		set = &spanSet{}
		p.m[id] = set
	}
	lo, hi := uint64(off), uint64(off)+uint64(n)-1
	before, spans := set.count(lo, hi), len(set.spans)
	set.add(lo, hi)
	p.ranges += len(set.spans) - spans
	return n - int(before)
}

// of returns the items done with of record id (nil: none).
func (p *partialAcks) of(id uint64) *spanSet { return p.m[id] }

// drop forgets record id (acknowledged whole, or lost).
func (p *partialAcks) drop(id uint64) {
	if set := p.m[id]; set != nil {
		p.ranges -= len(set.spans)
		delete(p.m, id)
	}
}

// clip drops the items of record id at or past count (a count learned
// after the items were acknowledged) and returns how many remain done.
func (p *partialAcks) clip(id uint64, count int) int {
	set := p.m[id]
	if set == nil {
		return 0
	}
	if count <= 0 {
		p.drop(id)
		return 0
	}
	kept := set.count(0, uint64(count)-1)
	if kept == 0 {
		p.drop(id)
		return 0
	}
	if set.max() >= uint64(count) {
		var c spanSet
		for _, sp := range set.spans {
			if sp.lo < uint64(count) {
				c.add(sp.lo, min(sp.hi, uint64(count)-1))
			}
		}
		p.ranges += len(c.spans) - len(set.spans)
		*set = c
	}
	return int(kept)
}

// entries returns every record's items as ack log entries, in id order.
func (p *partialAcks) entries() []itemsDone {
	out := make([]itemsDone, 0, p.ranges)
	for id, set := range p.m {
		for _, sp := range set.spans {
			out = append(out, itemsDone{id, uint32(sp.lo), uint32(sp.hi - sp.lo + 1)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].id != out[j].id {
			return out[i].id < out[j].id
		}
		return out[i].off < out[j].off
	})
	return out
}

// maxID returns the highest record id with items done (0: none).
func (p *partialAcks) maxID() uint64 {
	var hi uint64
	for id := range p.m {
		hi = max(hi, id)
	}
	return hi
}
