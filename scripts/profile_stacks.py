"""Summarise gdb stack samples of meshca serve (see scripts/profile.sh)."""
import collections
import re
import sys

WAITS = ("epoll_wait", "futex", "clock_nanosleep", "nanosleep", "__GI___poll", "pthread_cond", "syscall")
SYSCALLS = ("writev", "recvfrom", "__libc_recv", "__libc_read", "sendmsg", "__libc_write", "accept4", "getrandom")
# First match over the whole stack wins: crypto before the layers that call it.
CATEGORIES = [
    ("verify_ecdsa", "ECDSA verify (CSR proof of possession, ES256 token)"),
    ("RsaKeyPair::sign", "certificate signature (RSA)"),
    ("EcdsaKeyPair::sign", "certificate signature (ECDSA)"),
    ("ecdsa_sign", "certificate signature (ECDSA)"),
    ("rsa_verify", "RSA verify"),
    ("RSA_verify", "RSA verify"),
    ("aes_gcm", "TLS record encryption (AES-GCM)"),
    ("CTR_DRBG", "random numbers (serial, nonces)"),
    ("meshca_jwt", "JWT decode and claims"),
    ("rcgen", "certificate encoding (rcgen)"),
    ("x509_parser", "CSR / certificate parsing"),
    ("hpack", "HTTP/2 header compression"),
    ("h2::", "HTTP/2 framing"),
    ("hyper", "hyper"),
    ("tonic", "tonic (gRPC)"),
    ("rustls", "TLS (rustls, other)"),
    ("meshca_ca::audit", "audit"),
    ("tracing", "tracing"),
    ("tokio::runtime", "tokio scheduler"),
    ("malloc", "allocator"),
    ("free", "allocator"),
]


def stacks(path):
    cur = None
    for line in open(path, errors="replace"):
        if line.startswith("Thread"):
            if cur:
                yield cur
            cur = []
        elif line.startswith("#") and cur is not None:
            m = re.match(r"#\d+\s+(?:0x[0-9a-f]+ in )?(.*?) \(", line)
            cur.append(m.group(1) if m else line.strip())
        elif line.startswith("====="):
            if cur:
                yield cur
            cur = None
    if cur:
        yield cur


def category(stack):
    top = stack[0]
    for s in SYSCALLS:
        if s in top:
            return "kernel: " + s.strip("_").replace("GI___", "").replace("libc_", "")
    joined = " | ".join(stack)
    for needle, name in CATEGORIES:
        if needle in joined:
            return name
    return "other (meshca and std)"


def main():
    all_stacks = list(stacks(sys.argv[1]))
    running = [s for s in all_stacks if s and not any(w in s[0] for w in WAITS)]
    print(f"{len(all_stacks)} thread samples, {len(running)} running")
    if not running:
        sys.exit("no running thread sampled: was the server under load?")
    counts = collections.Counter(category(s) for s in running)
    print("| share | samples | where |")
    print("|---:|---:|---|")
    for name, n in counts.most_common():
        print(f"| {100.0 * n / len(running):.0f}% | {n} | {name} |")


if __name__ == "__main__":
    main()
