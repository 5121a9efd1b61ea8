package vinequeue

// Temporary: replaced by admit.go from the admission branch.
func (q *Queue[T]) admit(n int, bytes int64, spillable bool) error {
	if q.closing.Load() {
		return ErrClosed
	}
	q.hold(bytes)
	return nil
}

func (q *Queue[T]) unadmit(bytes int64) { q.hold(-bytes) }
