package inference

import "context"

// RunFunc runs a session on inputs: [Session.Run] itself, or a scheduler's
// wrapper that first waits for an inference slot, so that model code which
// calls a session in the middle of its own pre- and post-processing (face
// and text detection) runs on the slots the scheduler hands out.
type RunFunc func(ctx context.Context, s *Session, inputs ...Tensor) ([]Tensor, error)

// Run is the RunFunc that runs the session at once.
func Run(ctx context.Context, s *Session, inputs ...Tensor) ([]Tensor, error) {
	return s.Run(ctx, inputs...)
}
