package pool

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mlserve/mlserve/inference"
)

// DeviceOptions configure how models are placed on the runtime's devices
// and how their memory is budgeted. They matter only where the runtime
// has a device that reports its memory (a CUDA GPU, a FakeGPU in tests);
// on the CPU the cache keeps models by count alone.
type DeviceOptions struct {
	// Budget caps, per device, the memory the loaded models' sessions
	// took at load, in bytes; 0 leaves only the device's free memory as
	// the limit.
	Budget int64
	// Headroom is the memory a load leaves free on its device for runs
	// (activations, the arena's growth), in bytes; 0 means a tenth of the
	// device's memory, a negative value none.
	Headroom int64
	// LoadFactor estimates the device memory of a model never loaded
	// before as its files' size × LoadFactor (0: 1.5: the weights, and
	// the arena's first blocks and the provider's workspaces). A model
	// loaded once is estimated at what it took then.
	LoadFactor float64
	// ReplicaAfter is how long a model's queue must stay backed up before
	// the model gets a second session on another device that has room
	// for it (0: 2 s; negative: never).
	ReplicaAfter time.Duration
}

// Default device options.
const (
	defaultLoadFactor   = 1.5
	defaultHeadroomPart = 10 // a tenth of the device
	defaultReplicaAfter = 2 * time.Second
)

// devices hands out inference slots, one gate per device: a run of any
// model on the CPU takes one of the CPU's slots, so that runs × intra-op
// threads stay within the cores (two sessions running at once on the same
// cores slow each other down); each accelerator ("CUDA:0", "CUDA:1",
// "OpenVINO:GPU.0") has slots of its own, so that runs on one GPU never
// wait for another.
type devices struct {
	cpu, accel int

	mu    sync.Mutex
	slots map[string]chan struct{}
}

func newDevices(cpu, accel int) *devices {
	return &devices{cpu: max(1, cpu), accel: max(1, accel), slots: map[string]chan struct{}{}}
}

// gateOf maps a session's device ("CPU", "CUDA:1", "OpenVINO:GPU.0",
// "OpenVINO:CPU", "FakeGPU:0") to the gate whose slots it takes: every
// device that computes on the host's cores shares the CPU's.
func gateOf(device string) string {
	if device == "" || device == inference.CPU || strings.HasSuffix(device, ":"+inference.CPU) {
		return inference.CPU
	}
	return device
}

// slot returns the semaphore of the device.
func (d *devices) slot(device string) chan struct{} {
	g := gateOf(device)
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.slots[g]
	if s == nil {
		n := d.accel
		if g == inference.CPU {
			n = d.cpu
		}
		s = make(chan struct{}, n)
		d.slots[g] = s
	}
	return s
}

// deviceRuntime is what placement needs of the Sessions: an
// *inference.Runtime. Sessions without it load every model on their
// default device, counted by the cache alone.
type deviceRuntime interface {
	Devices() []*inference.Device
	AllowCPUFallback() bool
	NewFallbackSession(path string, o inference.SessionOptions, cause error) (*inference.Session, error)
}

// replica is one copy of a loaded model, on one device. A model has one,
// and a hot model one more per device that had room for it.
type replica struct {
	model Model
	// sessions are the sessions the model opened, in order.
	sessions []*inference.Session
	// placed is where the replica was loaded (nil: the Sessions' default).
	placed *inference.Device
	// lane is its runners in the model's batcher (nil for models run per
	// request).
	lane *lane
	// uses counts the requests running the model through this replica
	// (models run per request); gone marks a replica dropped while in
	// use, closed by its last user. Guarded by loaded.mu.
	uses int
	gone bool
}

// device is where the replica runs now: its sessions' device, the CPU
// after a fallback.
func (r *replica) device() string {
	if len(r.sessions) > 0 {
		return r.sessions[0].Device()
	}
	if r.placed != nil {
		return r.placed.Name()
	}
	return ""
}

// provider is the execution provider that runs the replica.
func (r *replica) provider() string {
	if len(r.sessions) > 0 {
		return r.sessions[0].Provider()
	}
	return providerOf(r.model)
}

// where is where the replica runs now.
func (r *replica) where() Where {
	return Where{Provider: r.provider(), Device: r.device(), Fallback: r.fallback() != nil}
}

// memoryOn is the device memory the replica's sessions on device took at
// load.
func (r *replica) memoryOn(device string) int64 {
	var n int64
	for _, s := range r.sessions {
		if s.Device() == device {
			n += s.DeviceMemory()
		}
	}
	return n
}

// memory is the device memory the replica's sessions took at load.
func (r *replica) memory() int64 {
	var n int64
	for _, s := range r.sessions {
		n += s.DeviceMemory()
	}
	return n
}

// fallback is why the replica runs on the CPU instead of its device, or
// nil.
func (r *replica) fallback() error {
	for _, s := range r.sessions {
		if err := s.Fallback(); err != nil {
			return err
		}
	}
	return nil
}

// fallBack moves the replica's sessions to the CPU.
func (r *replica) fallBack(cause error) error {
	var errs []error
	for _, s := range r.sessions {
		errs = append(errs, s.FallBackToCPU(cause))
	}
	return errors.Join(errs...)
}

// placedSessions is the Sessions a model loads through: each session it
// opens goes on one device, without the runtime's own CPU fallback (the
// service frees memory and retries first), or on the CPU through
// NewFallbackSession when cause is set. It records the sessions, so that
// the service knows the model's devices and memory.
type placedSessions struct {
	base   Sessions
	rt     deviceRuntime // nil: base has no devices
	device string
	cause  error

	mu     sync.Mutex
	opened []*inference.Session
}

func (p *placedSessions) NewSession(path string, o inference.SessionOptions) (*inference.Session, error) {
	var s *inference.Session
	var err error
	switch {
	case p.rt == nil:
		s, err = p.base.NewSession(path, o)
	case p.cause != nil:
		o.Device = ""
		s, err = p.rt.NewFallbackSession(path, o, p.cause)
	default:
		o.Device, o.NoFallback = p.device, true
		s, err = p.base.NewSession(path, o)
	}
	if err == nil && s != nil {
		p.mu.Lock()
		p.opened = append(p.opened, s)
		p.mu.Unlock()
	}
	return s, err
}

func (p *placedSessions) sessions() []*inference.Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.opened)
}

// placer decides which device a model loads on, and frees memory there by
// unloading idle models; see the package documentation for the rules.
type placer struct {
	s    *Service
	rt   deviceRuntime // nil: one default device, nothing to place
	devs []*inference.Device
	opts DeviceOptions

	// mu serialises placements: what a decision reads of the devices
	// (free memory, the loads in progress) holds until its reservation
	// is made. Lock order: placer.mu, then Cache.mu, loaded.mu or
	// placer.liveMu. Nothing a run does while it holds a device slot
	// takes mu (relieve does not), so that a placement may wait for
	// runs (to close a model) while holding it.
	mu sync.Mutex
	// reserved is the estimated memory of the loads in progress, per
	// device name.
	reserved map[string]int64
	// measured is what each model's sessions took at their last load on
	// a device that tells (bytes).
	measured map[Key]int64

	// live holds every replica loaded and not yet closed, whether or not
	// its model is in the cache yet: the budget's ledger.
	liveMu sync.Mutex
	live   map[*replica]struct{}

	ooms, fallbacks sync.Map // device name → *atomic.Int64
}

func newPlacer(s *Service, sessions Sessions, opts DeviceOptions) *placer {
	if opts.LoadFactor <= 0 {
		opts.LoadFactor = defaultLoadFactor
	}
	if opts.ReplicaAfter == 0 {
		opts.ReplicaAfter = defaultReplicaAfter
	}
	p := &placer{s: s, opts: opts, reserved: map[string]int64{}, measured: map[Key]int64{}, live: map[*replica]struct{}{}}
	if rt, ok := sessions.(deviceRuntime); ok {
		p.rt = rt
		p.devs = rt.Devices()
	}
	return p
}

func (p *placer) count(m *sync.Map, device string) *atomic.Int64 {
	v, _ := m.LoadOrStore(device, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// device returns the runtime's device named name, or nil.
func (p *placer) device(name string) *inference.Device {
	for _, d := range p.devs {
		if d.Name() == name {
			return d
		}
	}
	return nil
}

// budgeted tells whether loads on d are budgeted by memory: d reports its
// memory and does not compute on the host (the CPU's models are kept by
// count).
func budgeted(d *inference.Device) bool {
	if d == nil || d.Host() {
		return false
	}
	_, err := d.Memory()
	return err == nil
}

// fallbackAllowed tells whether models may move to the CPU.
func (p *placer) fallbackAllowed() bool { return p.rt != nil && p.rt.AllowCPUFallback() }

// estimate is the device memory a load of key is expected to take: what
// it took last time, or its files' size × LoadFactor; floor is the least
// it can take: what it took last time, or its files' size (the weights).
func (p *placer) estimate(key Key, dir, sub string) (need, floor int64) {
	p.mu.Lock()
	n, ok := p.measured[key]
	p.mu.Unlock()
	if ok {
		return n, n
	}
	size := modelFilesSize(filepath.Join(dir, sub))
	return int64(float64(size) * p.opts.LoadFactor), size
}

// modelFilesSize is the size of the ONNX files in dir (model.onnx, its
// external data, a landmark model beside it).
func modelFilesSize(dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		if !strings.Contains(e.Name(), ".onnx") {
			continue
		}
		if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && st.Mode().IsRegular() {
			n += st.Size()
		}
	}
	return n
}

// measure remembers what a replica's load took.
func (p *placer) measure(key Key, r *replica) {
	if n := r.memory(); n > 0 {
		p.mu.Lock()
		p.measured[key] = n
		p.mu.Unlock()
	}
}

// usage is the device memory the loaded models' sessions on device took
// at load, and the idle models there, least recently used first.
type usage struct {
	models int64
	count  int
	idle   []idleModel
}

type idleModel struct {
	e   idleEntry
	l   *loaded
	r   *replica
	mem int64
	// first tells whether r is the model's first replica: unloading it
	// unloads the model.
	first bool
}

// register adds a loaded replica to the ledger; unregister removes a
// closed one.
func (p *placer) register(r *replica) {
	p.liveMu.Lock()
	p.live[r] = struct{}{}
	p.liveMu.Unlock()
}

func (p *placer) unregister(r *replica) {
	p.liveMu.Lock()
	delete(p.live, r)
	p.liveMu.Unlock()
}

// held is what the live replicas on device took there at load, and how
// many they are.
func (p *placer) held(device string) (bytes int64, count int) {
	p.liveMu.Lock()
	rs := make([]*replica, 0, len(p.live))
	for r := range p.live {
		rs = append(rs, r)
	}
	p.liveMu.Unlock()
	for _, r := range rs {
		if r.device() == device {
			bytes += r.memoryOn(device)
			count++
		}
	}
	return bytes, count
}

// usageOf adds up what the models hold on device, and lists the idle ones
// there.
func (p *placer) usageOf(device string, idle []idleEntry) usage {
	var u usage
	u.models, u.count = p.held(device)
	for _, e := range idle {
		l, ok := e.model.(*loaded)
		if !ok {
			continue
		}
		for _, r := range l.replicasOn(device) {
			u.idle = append(u.idle, idleModel{e: e, l: l, r: r, mem: r.memoryOn(device), first: l.isFirst(r)})
		}
	}
	// Extra replicas go before whole models; each group least recently
	// used first.
	sort.SliceStable(u.idle, func(i, j int) bool { return !u.idle[i].first && u.idle[j].first })
	return u
}

// room is how much a load on d may take now without unloading anything:
// dev is the device's free memory less the headroom and the loads in
// progress; budget what the budget leaves (the most an int64 holds when
// there is none). Called with p.mu held.
func (p *placer) room(d *inference.Device, u usage) (dev, budget int64) {
	budget = math.MaxInt64
	if p.opts.Budget > 0 {
		budget = p.opts.Budget - u.models - p.reserved[d.Name()]
	}
	m, err := d.Memory()
	if err != nil {
		return 0, budget
	}
	head := p.opts.Headroom
	if head == 0 {
		head = m.Total / defaultHeadroomPart
	}
	return m.Free - max(head, 0) - p.reserved[d.Name()], budget
}

// placement is a decided load: its device (nil: the Sessions' default)
// and the reservation to give back when the load is over.
type placement struct {
	dev     *inference.Device
	release func()
}

func budgetNote(budget int64) string {
	if budget <= 0 {
		return ""
	}
	return " or the budget of " + inference.FormatBytes(budget) + " per device"
}

// ErrOverBudget: a model does not fit in any device's memory budget
// (DeviceOptions.Budget), even with every idle model unloaded. It comes
// wrapped with inference.ErrOutOfMemory.
var ErrOverBudget = errors.New("over the device memory budget")

// candidate is a device a load may go to, with what it would take.
type candidate struct {
	d           *inference.Device
	u           usage
	dev, budget int64 // room now (see room)
	fits        bool  // room now, unloading nothing
	// evict are the idle models to unload for room (fits after); tryOnly
	// those for the budget alone, when unloading cannot make room by the
	// estimate (the load is then tried: the estimate may be high).
	evict, tryOnly []idleModel
	canEvict       bool
	canTry         bool
	unloads        int       // models evict unloads whole (not replicas)
	newest         time.Time // the most recently used model evict unloads
}

// plan works out what a load of need bytes takes on c's device.
func (c *candidate) plan(key Key, need int64) {
	avail := min(c.dev, c.budget)
	c.fits = need <= avail
	if c.fits {
		return
	}
	freed := int64(0)
	for _, im := range c.u.idle {
		if im.l.key == key {
			continue
		}
		c.evict = append(c.evict, im)
		freed += im.mem
		if im.first {
			c.unloads++
			if im.e.lastUsed.After(c.newest) {
				c.newest = im.e.lastUsed
			}
		}
		if need <= avail+freed {
			break
		}
	}
	if need <= avail+freed {
		c.canEvict = true
		return
	}
	c.evict, c.unloads, c.newest = nil, 0, time.Time{}
	freed = 0
	for _, im := range c.u.idle {
		if c.budget == math.MaxInt64 || need <= c.budget+freed {
			break
		}
		if im.l.key != key {
			c.tryOnly = append(c.tryOnly, im)
			freed += im.mem
		}
	}
	c.canTry = c.budget == math.MaxInt64 || need <= c.budget+freed
}

// place chooses the device for a load of key that needs about need
// bytes (and at least floor), unloading idle models there if it must, and
// reserves the memory until release. Devices in avoid (those that already hold the model)
// are not considered. With replica set the load is a second copy of a
// busy model: it goes only where there is room without unloading
// anything, and place returns nil when there is none.
//
// The rule, in order: the device with the most room (memory free after
// the headroom, within the budget), then the fewest models, then the
// configured order; when none has room, the device where unloading idle
// models makes room at the least cost: extra replicas of idle models
// before whole models, then the least recently used (a model idle for an
// hour goes before one used a minute ago, whatever its device); when even
// unloading every idle model does not make room by the estimate, the
// device with the most free memory, within the budget: the estimate may
// be high, and a load that runs out of memory is retried after unloading
// (see loadFirst). Devices whose whole memory, or budget, is below floor
// are never tried: such a load would unload idle models for nothing.
// When no device can take the model, place fails with an error wrapping
// inference.ErrOutOfMemory (and ErrOverBudget when the budget is what
// keeps it out).
func (p *placer) place(key Key, need, floor int64, avoid []string, replica bool) (*placement, error) {
	if p.rt == nil || len(p.devs) == 0 {
		if replica {
			return nil, errNoRoom
		}
		return &placement{release: func() {}}, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := p.s.cache.idleEntries()
	var cands []*candidate
	var tooSmall []string
	var largest *inference.Device // of the devices too small
	var largestTotal int64
	for _, d := range p.devs {
		if slices.Contains(avoid, d.Name()) {
			continue
		}
		if m, err := d.Memory(); err == nil && budgeted(d) && (floor > m.Total || p.opts.Budget > 0 && floor > p.opts.Budget) {
			tooSmall = append(tooSmall, d.Name()+" ("+inference.FormatBytes(m.Total)+")")
			if largest == nil || m.Total > largestTotal {
				largest, largestTotal = d, m.Total
			}
			continue
		}
		if !budgeted(d) {
			if !replica { // no memory figures: no replicas there, and models spread by count
				c := &candidate{d: d, fits: true, dev: math.MaxInt64, budget: math.MaxInt64}
				c.u.models, c.u.count = p.held(d.Name())
				cands = append(cands, c)
			}
			continue
		}
		c := &candidate{d: d, u: p.usageOf(d.Name(), idle)}
		c.dev, c.budget = p.room(d, c.u)
		c.plan(key, need)
		cands = append(cands, c)
	}
	var best *candidate
	for _, c := range cands {
		if c.fits && (best == nil || min(c.dev, c.budget) > min(best.dev, best.budget) ||
			min(c.dev, c.budget) == min(best.dev, best.budget) && c.u.count < best.u.count) {
			best = c
		}
	}
	if best == nil && replica {
		return nil, errNoRoom
	}
	if best == nil {
		for _, c := range cands {
			if c.canEvict && (best == nil || c.unloads < best.unloads ||
				c.unloads == best.unloads && c.newest.Before(best.newest)) {
				best = c
			}
		}
		if best != nil {
			p.evictLocked(best.evict, best.d.Name())
		}
	}
	if best == nil {
		for _, c := range cands {
			if c.canTry && (best == nil || c.dev > best.dev) {
				best = c
			}
		}
		if best != nil {
			p.evictLocked(best.tryOnly, best.d.Name())
		}
	}
	if best == nil {
		if len(cands) == 0 && len(tooSmall) > 0 && !replica {
			cause := inference.ErrOutOfMemory
			overBudget := p.opts.Budget > 0 && floor > p.opts.Budget
			if overBudget {
				cause = fmt.Errorf("%w (%w)", ErrOverBudget, inference.ErrOutOfMemory)
			}
			e := memoryError(fmt.Errorf("%w: %s needs at least %s of device memory, more than the whole of %s%s",
				cause, key, inference.FormatBytes(floor), strings.Join(tooSmall, ", "), budgetNote(p.opts.Budget)),
				key, "load", largest.Name(), floor).withMemory(largest)
			if overBudget {
				e.Budget, e.BudgetLeft = p.opts.Budget, p.opts.Budget
			}
			return nil, e
		}
		if len(cands) == 0 {
			return nil, errNoRoom
		}
		c := cands[0]
		e := memoryError(fmt.Errorf("%w (%w): %s needs about %s and the budget of %s per device leaves %s on %s; %s",
			ErrOverBudget, inference.ErrOutOfMemory, key, inference.FormatBytes(need), inference.FormatBytes(p.opts.Budget),
			inference.FormatBytes(max(0, c.budget)), c.d.Name(), p.heldOn(c.d.Name())),
			key, "load", c.d.Name(), need).withMemory(c.d)
		e.Budget, e.BudgetLeft = p.opts.Budget, max(0, c.budget)
		return nil, e
	}
	name := best.d.Name()
	p.reserved[name] += need
	var once sync.Once
	return &placement{dev: best.d, release: func() {
		once.Do(func() {
			p.mu.Lock()
			p.reserved[name] -= need
			if p.reserved[name] <= 0 {
				delete(p.reserved, name)
			}
			p.mu.Unlock()
		})
	}}, nil
}

// evictLocked unloads the idle models' replicas on device: a model's
// extra replica alone, a model whose first replica is there whole, and
// only while it is still idle.
func (p *placer) evictLocked(ims []idleModel, device string) int {
	n := 0
	for _, im := range ims {
		if im.l.dropReplica(im.r) {
			n++
			p.s.logger.Info("replica unloaded to make room", "model", im.l.key.String(), "device", device)
			continue
		}
		if p.s.cache.evictIdle(im.e.key, im.e.model) {
			n++
			p.s.logger.Info("idle model unloaded to make room", "model", im.l.key.String(), "device", device)
		}
	}
	return n
}

// relieve unloads every idle model on device, except keep's own, after an
// out-of-memory error there, and returns how many went. It does not take
// p.mu: a run that ran out of memory calls it while a placement may be
// waiting for that run (every unload checks, under its own lock, that
// the model is still idle).
func (p *placer) relieve(device string, keep Key) int {
	d := p.device(device)
	if d == nil || d.Host() {
		return 0
	}
	u := p.usageOf(device, p.s.cache.idleEntries())
	var ims []idleModel
	for _, im := range u.idle {
		if im.l.key != keep {
			ims = append(ims, im)
		}
	}
	return p.evictLocked(ims, device)
}

// heldOn describes the memory held on device by the models left there
// (in use, or preloaded), for an out-of-memory error's message.
func (p *placer) heldOn(device string) string {
	n, count := p.held(device)
	return fmt.Sprintf("the %d models left there (in use or preloaded) took %s", count, inference.FormatBytes(n))
}

// DeviceStatus is one device's state, for readiness and metrics.
type DeviceStatus struct {
	// Name is the device ("CUDA:0", "CPU"), Provider its execution
	// provider.
	Name, Provider string
	// Total and Free are the device's memory (0 when it cannot tell);
	// Budgeted tells whether loads there are budgeted by memory.
	Total, Free int64
	Budgeted    bool
	// Models is how many loaded models (replicas counted) run there, and
	// ModelMemory what their sessions took at load.
	Models      int
	ModelMemory int64
	// Runs are the runs in progress, of at most Slots.
	Runs, Slots int
	// OutOfMemory counts the out-of-memory errors seen there (loads and
	// runs); Fallbacks the models that moved from it to the CPU.
	OutOfMemory, Fallbacks int64
}

// Devices reports the devices models are placed on (the runtime's, or
// the one default device), and the CPU when models run there.
func (s *Service) Devices() []DeviceStatus {
	p := s.placer
	all := s.loadedModels()
	var names []string
	var provs []string
	for _, d := range p.devs {
		names = append(names, d.Name())
		provs = append(provs, d.Provider())
	}
	for _, l := range all {
		for _, r := range l.replicaList() {
			if dv := r.device(); !slices.Contains(names, dv) {
				names = append(names, dv)
				provs = append(provs, r.provider())
			}
		}
	}
	out := make([]DeviceStatus, 0, len(names))
	for i, name := range names {
		st := DeviceStatus{Name: name, Provider: provs[i]}
		if d := p.device(name); d != nil {
			if m, err := d.Memory(); err == nil {
				st.Total, st.Free = m.Total, m.Free
			}
			st.Budgeted = budgeted(d)
		}
		st.ModelMemory, st.Models = p.held(name)
		slot := s.devices.slot(name)
		st.Runs, st.Slots = len(slot), cap(slot)
		st.OutOfMemory = p.count(&p.ooms, name).Load()
		st.Fallbacks = p.count(&p.fallbacks, name).Load()
		out = append(out, st)
	}
	return out
}
