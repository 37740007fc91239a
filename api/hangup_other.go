//go:build !linux

package api

// watchHangup is not implemented outside Linux: work for a client that
// went away runs until the worker timeout.
func (c *conn) watchHangup(gone func()) (stop func()) { return func() {} }
