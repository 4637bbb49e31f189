package sim

import (
	"time"
)

// The reference firmware's Node (about 1.6 KB) and status patch. Unlike the
// device package it advertises 256Ki and 0 pods and sets no taint; these are
// its bodies, reproduced so the gateway sees exactly what it would.

func (f *firmwareDevice) nodeBody() []byte {
	now := f.now()
	b := make([]byte, 0, 1700)
	b = append(b, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"`...)
	b = append(b, f.name...)
	b = append(b, `","labels":{"beta.kubernetes.io/arch":"arm","beta.kubernetes.io/os":"linux","kubernetes.io/arch":"arm","kubernetes.io/os":"linux","kubernetes.io/hostname":"`...)
	b = append(b, f.name...)
	b = append(b, `","node.kubernetes.io/instance-type":"rp2040-pico"}},"status":{"capacity":{"cpu":"1","memory":"256Ki","pods":"0"},"allocatable":{"cpu":"1","memory":"256Ki","pods":"0"},`...)
	b = f.appendConditions(b, now)
	b = append(b, ',')
	b = f.appendAddresses(b)
	b = append(b, `,"daemonEndpoints":{"kubeletEndpoint":{"Port":10250}},"nodeInfo":{"machineID":"pico-`...)
	b = append(b, f.name...)
	b = append(b, `","systemUUID":"`...)
	b = append(b, f.name...)
	b = append(b, `","bootID":"1","kernelVersion":"pico-sdk-1.5.1","osImage":"Raspberry Pi Pico W (RP2040)","containerRuntimeVersion":"none://0.0.0","kubeletVersion":"v1.28.0-pico","kubeProxyVersion":"v1.28.0-pico","operatingSystem":"linux","architecture":"arm"}}}`...)
	return b
}

func (f *firmwareDevice) statusBody() []byte {
	b := make([]byte, 0, 1200)
	b = append(b, `{"status":{`...)
	b = f.appendConditions(b, f.now())
	b = append(b, ',')
	b = f.appendAddresses(b)
	return append(b, "}}"...)
}

// appendConditions writes the firmware's five conditions, each with
// lastHeartbeatTime (now, from the Date-header clock) and
// lastTransitionTime (the boot time by that clock).
func (f *firmwareDevice) appendConditions(b []byte, now time.Time) []byte {
	boot := f.boot
	if boot.IsZero() {
		boot = now
	}
	conds := [5][3]string{
		{"Ready", "True", "KubeletReady"},
		{"MemoryPressure", "False", "KubeletHasSufficientMemory"},
		{"DiskPressure", "False", "KubeletHasNoDiskPressure"},
		{"PIDPressure", "False", "KubeletHasSufficientPID"},
		{"NetworkUnavailable", "False", "RouteCreated"},
	}
	b = append(b, `"conditions":[`...)
	for i, c := range conds {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":"`+c[0]+`","status":"`+c[1]+`","reason":"`+c[2]+`","lastHeartbeatTime":"`...)
		b = now.UTC().AppendFormat(b, time.RFC3339)
		b = append(b, `","lastTransitionTime":"`...)
		b = boot.UTC().AppendFormat(b, time.RFC3339)
		b = append(b, `"}`...)
	}
	return append(b, ']')
}

func (f *firmwareDevice) appendAddresses(b []byte) []byte {
	b = append(b, `"addresses":[{"type":"InternalIP","address":"`...)
	b = append(b, f.addrLabel...)
	b = append(b, `"},{"type":"Hostname","address":"`...)
	b = append(b, f.name...)
	return append(b, `"}]`...)
}
