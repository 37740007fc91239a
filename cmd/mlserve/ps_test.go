package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestPsShowsDevices: `mlserve ps` shows each model's replicas, a model
// that moved to the CPU and why, and one line per device, from a GPU
// server's /health/ready (as the API writes it; the API's tests check
// that it does, on fake devices).
func TestPsShowsDevices(t *testing.T) {
	const ready = `{"status":"ready","workers":4,"busy":1,"queued":0,"maxQueue":64,
	"models":[
	 {"task":"clip","type":"visual","model":"ViT-B-32__openai","provider":"CUDA","device":"CUDA:0","inUse":1,"preloaded":true,"idleSeconds":0,
	  "replicas":[{"provider":"CUDA","device":"CUDA:0"},{"provider":"CUDA","device":"CUDA:1"}],"deviceMemoryBytes":734003200},
	 {"task":"facial-recognition","type":"recognition","model":"buffalo_l","provider":"CPU","device":"CPU","inUse":0,"preloaded":false,"idleSeconds":12,
	  "replicas":[{"provider":"CPU","device":"CPU","fallback":true}],
	  "fallback":{"from":"CUDA:1","reason":"CUDA:1 out of memory loading the model: it asked for 160.0 MiB, 20.0 MiB free of 24.0 GiB"}}],
	"devices":[
	 {"name":"CUDA:0","provider":"CUDA","models":1,"memoryTotalBytes":25769803776,"memoryFreeBytes":20401094656,"modelMemoryBytes":367001600,"runs":1,"slots":2,"outOfMemory":0,"cpuFallbacks":0},
	 {"name":"CUDA:1","provider":"CUDA","models":1,"memoryTotalBytes":25769803776,"memoryFreeBytes":20971520,"runs":0,"slots":2,"outOfMemory":2,"cpuFallbacks":1},
	 {"name":"CPU","provider":"CPU","models":1,"runs":0,"slots":1,"outOfMemory":0,"cpuFallbacks":0}]}`
	var st psStatus
	if err := json.Unmarshal([]byte(ready), &st); err != nil {
		t.Fatal(err)
	}
	st.URL = "http://gpu:3003"
	var out bytes.Buffer
	printStatus(&out, st)
	for _, want := range []string{
		"device CUDA:0 (CUDA): 1 model, 19.0 GiB free of 24.0 GiB, models took 350.0 MiB, runs 1/2\n",
		"device CUDA:1 (CUDA): 1 model, 20.0 MiB free of 24.0 GiB, runs 0/2, 2 out of memory, 1 moved to the CPU\n",
		"device CPU (CPU): 1 model, runs 0/1\n",
		"CUDA:0+CUDA:1",
		"CPU (fallback from CUDA:1)",
		"facial-recognition/recognition buffalo_l runs on the CPU: CUDA:1 out of memory loading the model",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("ps lacks %q:\n%s", want, out.String())
		}
	}
}
