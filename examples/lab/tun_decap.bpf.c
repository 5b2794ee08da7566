// SPDX-License-Identifier: GPL-2.0
//
// LVS-TUN decapsulation for a lab realserver, in XDP: the lab kernel has neither the ipip nor
// the fou module, and examples/lab/ipip_decap.py (a userspace decapsulator) would measure
// Python rather than the director in examples/lab/bench.sh. Written from RFC 2003 and the
// GUE draft, not from ringvs's encoder (host/src/dataplane/tunnel.rs).
//
// On the realserver's interface, a frame that carries
//   IPv4 (protocol 4)                                   -- IPIP
//   IPv4 (protocol 17) + UDP to GUE_PORT + GUE v0, no options, protocol 4   -- GUE
// has its outer header checked (version 4, no options, not a fragment, header checksum) and
// stripped (bpf_xdp_adjust_head), its Ethernet header moved up; the inner IPv4 packet goes up
// the stack as if it had arrived bare (the realserver holds the virtual address on lo). A
// tunnelled packet that fails a check is dropped; anything else passes untouched.
//
//   clang -O2 -g -target bpf -I/usr/include/$(uname -m)-linux-gnu -c tun_decap.bpf.c -o tun_decap.o
//   ip link set dev eth0 xdpgeneric obj tun_decap.o sec xdp
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef GUE_PORT
#define GUE_PORT 6080
#endif

#define GUE_LEN 4

// The one's complement sum of the 20-byte header, checksum field included, is 0xffff when
// the header is intact.
static __always_inline int header_ok(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

SEC("xdp")
int tun_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *outer = (void *)(eth + 1);
	struct ethhdr copy;
	struct iphdr *inner;
	__u32 strip;

	if ((void *)(outer + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (outer->protocol == IPPROTO_IPIP) {
		strip = sizeof(struct iphdr);
	} else if (outer->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)(outer + 1);
		__u8 *gue = (void *)(udp + 1);

		if ((void *)(gue + GUE_LEN) > end || udp->dest != bpf_htons(GUE_PORT))
			return XDP_PASS;
		// Version 0, not a control message, no options (first byte 0); protocol IPIP.
		if (gue[0] != 0 || gue[1] != IPPROTO_IPIP)
			return XDP_DROP;
		strip = sizeof(struct iphdr) + sizeof(struct udphdr) + GUE_LEN;
	} else {
		return XDP_PASS;
	}
	if (outer->version != 4 || outer->ihl != 5 || !header_ok(outer))
		return XDP_DROP;
	// A fragment of a tunnelled packet: the kernel reassembles (it has no ipip to hand it
	// to, so it is lost there; the director sends none with DF set).
	if (outer->frag_off & bpf_htons(0x3fff))
		return XDP_PASS;
	inner = (void *)outer + strip;
	if ((void *)(inner + 1) > end || inner->version != 4)
		return XDP_DROP;

	__builtin_memcpy(&copy, eth, sizeof(copy));
	if (bpf_xdp_adjust_head(ctx, (int)strip))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth, &copy, sizeof(copy));
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
