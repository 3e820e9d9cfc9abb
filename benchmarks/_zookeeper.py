"""ZooKeeper for the benchmarks: a server started from Debian's package, its
four-letter-word admin commands, and the Java load client (``ZK_LOAD_JAVA``)
that drives it the way wrk drives the HTTP systems.

ZooKeeper has no HTTP API and Debian's package ships no usable load tool; a
Python client (kazoo) would cost more CPU than the server it measures. So
the client is a small Java program on ZooKeeper's own client library,
written to a temp dir and compiled with javac at run time: one session per
client, one asynchronous request in flight per session, every latency kept
(exact percentiles). Shared by bench_cluster.py (three servers) and
bench_single_node.py (one standalone server, and three).

An ensemble of ``n`` servers on 127.0.0.1 is written by ``ensemble_servers``
(one config, data dir and myid per member) and is settled, by
``ensemble_settled``, when one leader has every follower synced and all
members show the same zxid.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Self

from _common import CLK_TCK, HOST, Server, distinct_ports, process_cpu_ticks, stop_process

ZK_JAR = Path("/usr/share/java/zookeeper.jar")
ZK_LOG_JAR = Path("/usr/share/java/slf4j-simple.jar")  # server logs to stderr
ZK_NOP_JAR = Path("/usr/share/java/slf4j-nop.jar")  # a silent client

# {servers} is empty for a standalone server, one server.N line per member
# for an ensemble.
ZK_CFG = """\
tickTime={tick_ms}
initLimit=10
syncLimit=5
dataDir={data}
clientPort={client}
clientPortAddress={host}
forceSync=yes
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr,mntr,ruok
{servers}
"""


def server_argv(java: str, cfg: Path) -> list[str]:
    """One ZooKeeper server on the config file ``cfg`` (QuorumPeerMain runs a
    standalone server when the config names no other member)."""
    cp = str(ZK_JAR) + (f":{ZK_LOG_JAR}" if ZK_LOG_JAR.is_file() else "")
    return [
        java,
        "-Xms256m",
        "-Xmx1g",
        "-cp",
        cp,
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        str(cfg),
    ]


def four_letter_word(port: int, word: str, timeout_s: float = 1.0) -> str:
    """ZooKeeper's four-letter-word admin command over its client port."""
    with socket.create_connection((HOST, port), timeout=timeout_s) as s:
        s.sendall(word.encode())
        chunks = []
        for _ in range(10_000):  # bounded: an answer is a few KiB at most
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def zk_srvr(port: int) -> dict[str, str]:
    out = {}
    for line in four_letter_word(port, "srvr").splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


def zk_mntr(port: int) -> dict[str, str]:
    out = {}
    for line in four_letter_word(port, "mntr").splitlines():
        k, _, v = line.partition("\t")
        out[k] = v
    return out


def zk_fsync_counters(port: int) -> tuple[float, float]:
    """Requests flushed to the txn log (summed batch sizes) and fsyncs."""
    values = zk_mntr(port)
    return (
        float(values["zk_sum_sync_processor_batch_size"]),
        float(values["zk_cnt_fsynctime"]),
    )


def zk_version(port: int) -> str:
    with contextlib.suppress(OSError, RuntimeError):
        v = zk_srvr(port).get("Zookeeper version", "")
        return v.split(",")[0].split("-")[0]
    return ""


# ---- an ensemble on one machine --------------------------------------------------------


def ensemble_servers(java: str, workdir: Path, n: int, tick_ms: int) -> list[tuple[Server, Path]]:
    """``n`` ZooKeeper servers forming one ensemble on 127.0.0.1, not started:
    for member i (1..n) a data dir ``zk<i>`` holding its myid, a config
    ``zk<i>.cfg`` (ZK_CFG with every member's quorum and election ports) and a
    log ``zk<i>.log``, all under ``workdir``. Returns (server, data dir) in
    member order."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = distinct_ports(3 * n)
    clients, quorum, election = ports[:n], ports[n : 2 * n], ports[2 * n :]
    servers = "\n".join(f"server.{i + 1}={HOST}:{quorum[i]}:{election[i]}" for i in range(n))
    out = []
    for i in range(n):
        data = workdir / f"zk{i + 1}"
        data.mkdir(parents=True, exist_ok=True)
        (data / "myid").write_text(f"{i + 1}\n")
        cfg = workdir / f"zk{i + 1}.cfg"
        cfg.write_text(
            ZK_CFG.format(tick_ms=tick_ms, data=data, client=clients[i], host=HOST, servers=servers)
        )
        server = Server(
            name="zookeeper",
            port=clients[i],
            argv=server_argv(java, cfg),
            log_path=workdir / f"zk{i + 1}.log",
            ready_path="",
            fsync_metrics=("", ""),
        )
        out.append((server, data))
    return out


def zk_leader_port(ports: Iterable[int]) -> int | None:
    """The client port of the member that says it leads; members that do not
    answer are passed over."""
    for port in ports:
        with contextlib.suppress(OSError):
            if zk_srvr(port).get("Mode") == "leader":
                return port
    return None


def ensemble_settled(ports: list[int]) -> bool:
    """One leader, every other member its synced follower, all at the same
    zxid. Raises OSError (or KeyError, ValueError) when a member does not
    answer yet: callers poll."""
    views = {port: zk_srvr(port) for port in ports}
    modes = sorted(v.get("Mode", "") for v in views.values())
    if modes.count("leader") != 1 or modes.count("follower") != len(views) - 1:
        return False
    lead = next(port for port, v in views.items() if v["Mode"] == "leader")
    if int(zk_mntr(lead)["zk_synced_followers"]) != len(views) - 1:
        return False
    # In a new epoch with no txn yet the followers still show the last zxid
    # of the previous one: only a zxid with a counter part can be compared.
    if int(views[lead]["Zxid"], 16) & 0xFFFFFFFF == 0:
        return True
    return len({v["Zxid"] for v in views.values()}) == 1


# ---- the Java load client --------------------------------------------------------------


def compile_load_client(javac: str, classes: Path) -> None:
    """Write the Java load client into ``classes`` and compile it there."""
    classes.mkdir(parents=True, exist_ok=True)
    src = classes / "ZkLoad.java"
    src.write_text(ZK_LOAD_JAVA)
    done = subprocess.run(
        [javac, "-proc:none", "-implicit:none", "-cp", str(ZK_JAR), "-d", str(classes), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"javac failed:\n{done.stdout}\n{done.stderr}")


def load_client_argv(java: str, classes: Path, mode: str, **kw: object) -> list[str]:
    cp = f"{classes}:{ZK_JAR}" + (f":{ZK_NOP_JAR}" if ZK_NOP_JAR.is_file() else "")
    return [
        java,
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-Dzookeeper.sasl.client=false",
        "-cp",
        cp,
        "ZkLoad",
        mode,
        *(f"{k}={v}" for k, v in kw.items()),
    ]


def drive_load(
    argv: list[str], deadline: float, on_window: Callable[[str], None]
) -> tuple[dict[str, float], float]:
    """Run the client in ``load`` mode; call ``on_window`` with "start" and
    "end" at the edges of its measured window; return its ZK_RESULT fields
    and its own CPU seconds over the window."""
    with ChildLines(argv) as c:
        c.expect("WINDOW_START", deadline)
        cpu0 = process_cpu_ticks(c.proc.pid)
        on_window("start")
        c.expect("WINDOW_END", deadline)
        cpu1 = process_cpu_ticks(c.proc.pid)
        on_window("end")
        line = c.expect("ZK_RESULT", deadline)
    fields = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    return fields, (cpu1 - cpu0) / CLK_TCK


class ChildLines:
    """A child process read line by line (a thread feeds a queue, so every
    wait has a deadline), stopped by its PID on exit."""

    def __init__(self, argv: list[str], stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc, timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, deadline: float) -> str:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"pid {self.proc.pid}: no {prefix!r} line in time")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                tail = "\n".join(self.seen[-20:])
                raise RuntimeError(f"pid {self.proc.pid} exited ({self.proc.poll()}):\n{tail}")
            self.seen.append(line)
            if line == prefix or line.startswith(prefix + " "):
                return line


# The ZooKeeper load client, compiled into the temp dir at run time (javac and
# ZooKeeper's own client jar; no build tool, nothing kept in the tree).
ZK_LOAD_JAVA = r"""import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.zookeeper.AsyncCallback;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;

/**
 * Load generator for the ZooKeeper runs of bench_cluster.py and bench_single_node.py.
 * Arguments are key=value pairs; modes:
 *   preload  servers=H:P,.. keys=N value=B
 *   load     servers=H:P,.. op=put|get clients=N warmup=S duration=S keys=N value=B seed=N
 *            client i talks to servers[i % n] only, one request in flight each
 *            (a closed loop, like one wrk connection); prints WINDOW_START and
 *            WINDOW_END (System.nanoTime, CLOCK_MONOTONIC) and one ZK_RESULT line.
 *   failover servers=H:P,.. (the survivors) retry_ms=N fresh_ms=N deadline_ms=N
 *            prints READY once connected, then reads "GO <kill ns>" on stdin and
 *            prints "ACK kind=session|fresh ns=.." for the first acknowledged
 *            write of each kind of prober.
 */
public final class ZkLoad {
  static final int SESSION_TIMEOUT_MS = 30000;
  static final int CONNECT_TIMEOUT_MS = 20000;

  public static void main(String[] argv) throws Exception {
    Map<String, String> a = new HashMap<>();
    for (int i = 1; i < argv.length; i++) {
      String[] kv = argv[i].split("=", 2);
      a.put(kv[0], kv.length > 1 ? kv[1] : "");
    }
    String[] servers = a.get("servers").split(",");
    switch (argv[0]) {
      case "preload" -> preload(servers, num(a, "keys", 1000), num(a, "value", 32));
      case "load" -> load(servers, a.getOrDefault("op", "put"), num(a, "clients", 1),
          Double.parseDouble(a.getOrDefault("warmup", "2")),
          Double.parseDouble(a.getOrDefault("duration", "10")),
          num(a, "keys", 1000), num(a, "value", 32), num(a, "seed", 1));
      case "failover" -> failover(servers, num(a, "retry_ms", 5), num(a, "fresh_ms", 20),
          num(a, "deadline_ms", 30000));
      default -> throw new IllegalArgumentException("unknown mode " + argv[0]);
    }
    System.out.flush();
    System.exit(0); // ZooKeeper's own threads are not daemons
  }

  static int num(Map<String, String> a, String k, int dflt) {
    return a.containsKey(k) ? Integer.parseInt(a.get(k)) : dflt;
  }

  static String key(int k) {
    return String.format("/bench/k%05d", k);
  }

  static byte[] value(Random rnd, int n) {
    byte[] b = new byte[n];
    String alnum = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (int i = 0; i < n; i++) b[i] = (byte) alnum.charAt(rnd.nextInt(alnum.length()));
    return b;
  }

  /** A handle connected to `connect`, or an exception after the connect timeout. */
  static ZooKeeper connect(String connect, int sessionTimeoutMs) throws Exception {
    CountDownLatch up = new CountDownLatch(1);
    ZooKeeper zk = new ZooKeeper(connect, sessionTimeoutMs, e -> {
      if (e.getState() == Watcher.Event.KeeperState.SyncConnected) up.countDown();
    });
    if (!up.await(CONNECT_TIMEOUT_MS, TimeUnit.MILLISECONDS)) {
      zk.close();
      throw new IllegalStateException("no session with " + connect);
    }
    return zk;
  }

  static void preload(String[] servers, int keys, int valueBytes) throws Exception {
    ZooKeeper zk = connect(servers[0], SESSION_TIMEOUT_MS);
    try {
      zk.create("/bench", new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
    } catch (KeeperException.NodeExistsException e) {
      // a rerun against kept data
    }
    Semaphore window = new Semaphore(128); // bounded pipelining
    CountDownLatch done = new CountDownLatch(keys);
    AtomicLong failed = new AtomicLong();
    for (int k = 0; k < keys; k++) {
      byte[] v = String.format("v%d-", k).getBytes(StandardCharsets.UTF_8);
      byte[] padded = Arrays.copyOf(v, Math.max(v.length, valueBytes));
      Arrays.fill(padded, v.length, padded.length, (byte) 'x');
      window.acquire();
      final String path = key(k);
      zk.create(path, padded, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT,
          (rc, p, ctx, name) -> {
            if (rc == KeeperException.Code.NODEEXISTS.intValue()) {
              zk.setData(path, padded, -1, (rc2, p2, c2, s2) -> {
                if (rc2 != 0) failed.incrementAndGet();
                window.release();
                done.countDown();
              }, null);
              return;
            }
            if (rc != 0) failed.incrementAndGet();
            window.release();
            done.countDown();
          }, null);
    }
    if (!done.await(120, TimeUnit.SECONDS)) throw new IllegalStateException("preload timed out");
    zk.close();
    System.out.println("PRELOADED keys=" + keys + " failed=" + failed.get());
  }

  /** One closed-loop client: the next request goes out when the previous one is answered. */
  static final class Client implements AsyncCallback.StatCallback, AsyncCallback.DataCallback {
    final ZooKeeper zk;
    final boolean put;
    final Random rnd;
    final String[] paths;
    final byte[][] values;
    final Run run;
    long[] lat = new long[4096]; // microseconds, requests completed inside the window
    int n;
    long errors;
    long sentNs;

    Client(ZooKeeper zk, boolean put, Random rnd, String[] paths, byte[][] values, Run run) {
      this.zk = zk;
      this.put = put;
      this.rnd = rnd;
      this.paths = paths;
      this.values = values;
      this.run = run;
    }

    void next() {
      int k = rnd.nextInt(paths.length);
      sentNs = System.nanoTime();
      if (put) zk.setData(paths[k], values[k], -1, this, null);
      else zk.getData(paths[k], false, this, null);
    }

    @Override
    public void processResult(int rc, String path, Object ctx, Stat stat) {
      done(rc);
    }

    @Override
    public void processResult(int rc, String path, Object ctx, byte[] data, Stat stat) {
      done(rc);
    }

    // Runs on this handle's event thread only: no locking needed for lat/n/errors.
    void done(int rc) {
      long now = System.nanoTime();
      if (now >= run.windowStartNs && now < run.windowEndNs) {
        if (rc != 0) {
          errors++;
        } else {
          if (n == lat.length) lat = Arrays.copyOf(lat, n * 2);
          lat[n++] = (now - sentNs) / 1000;
        }
      }
      if (now < run.stopNs) next();
      else run.finished.countDown();
    }
  }

  static final class Run {
    volatile long windowStartNs = Long.MAX_VALUE;
    volatile long windowEndNs = Long.MAX_VALUE;
    volatile long stopNs = Long.MAX_VALUE;
    final CountDownLatch finished;

    Run(int clients) {
      finished = new CountDownLatch(clients);
    }
  }

  static void load(String[] servers, String op, int clients, double warmupS, double durationS,
      int keys, int valueBytes, int seed) throws Exception {
    String[] paths = new String[keys];
    for (int k = 0; k < keys; k++) paths[k] = key(k);
    Run run = new Run(clients);
    List<Client> all = new ArrayList<>();
    for (int i = 0; i < clients; i++) {
      Random rnd = new Random(seed * 1000L + i);
      byte[][] values = new byte[keys][];
      for (int k = 0; k < keys; k++) values[k] = value(rnd, valueBytes);
      ZooKeeper zk = connect(servers[i % servers.length], SESSION_TIMEOUT_MS);
      all.add(new Client(zk, op.equals("put"), rnd, paths, values, run));
    }
    for (Client c : all) c.next();
    Thread.sleep((long) (warmupS * 1000));
    long start = System.nanoTime();
    run.windowStartNs = start;
    System.out.println("WINDOW_START " + start);
    System.out.flush();
    long end = start + (long) (durationS * 1e9);
    run.windowEndNs = end;
    while (System.nanoTime() < end) Thread.sleep(Math.max(1, (end - System.nanoTime()) / 1_000_000));
    run.stopNs = end;
    System.out.println("WINDOW_END " + System.nanoTime());
    System.out.flush();
    boolean drained = run.finished.await(30, TimeUnit.SECONDS);
    long total = 0, errors = 0;
    for (Client c : all) {
      total += c.n;
      errors += c.errors;
    }
    long[] merged = new long[(int) total];
    int at = 0;
    for (Client c : all) {
      System.arraycopy(c.lat, 0, merged, at, c.n);
      at += c.n;
    }
    Arrays.sort(merged);
    double sum = 0;
    for (long v : merged) sum += v;
    System.out.printf("ZK_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.1f "
        + "max_us=%d errors=%d undrained=%d%n", total, (end - start) / 1000, pct(merged, 50),
        pct(merged, 99), total > 0 ? sum / total : 0.0, total > 0 ? merged[merged.length - 1] : 0,
        errors, drained ? 0 : run.finished.getCount());
    for (Client c : all) c.zk.close(1000);
  }

  /** Nearest-rank percentile, as benchmarks/_common.py computes it. */
  static long pct(long[] sorted, double q) {
    if (sorted.length == 0) return 0;
    int rank = (int) Math.round(q / 100 * sorted.length) - 1;
    return sorted[Math.max(0, Math.min(sorted.length - 1, rank))];
  }

  static void failover(String[] survivors, int retryMs, int freshMs, int deadlineMs) throws Exception {
    String both = String.join(",", survivors);
    // "session": clients that keep their session and retry on it, as applications
    // do; the ZooKeeper client itself waits 0-1 s before each reconnect.
    List<ZooKeeper> sessions = new ArrayList<>();
    for (int i = 0; i < survivors.length; i++) {
      ZooKeeper zk = connect(both, SESSION_TIMEOUT_MS);
      zk.setData("/bench/k00000", new byte[] {'f'}, -1);
      sessions.add(zk);
    }
    System.out.println("READY");
    System.out.flush();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String go = in.readLine();
    if (go == null || !go.startsWith("GO")) throw new IllegalStateException("expected GO, got " + go);
    long deadline = System.nanoTime() + deadlineMs * 1_000_000L;
    AtomicLong sessionAck = new AtomicLong(), freshAck = new AtomicLong();
    CountDownLatch bothDone = new CountDownLatch(2);
    ExecutorService pool = Executors.newCachedThreadPool(r -> {
      Thread t = new Thread(r);
      t.setDaemon(true);
      return t;
    });
    for (ZooKeeper zk : sessions) {
      pool.submit(() -> {
        while (sessionAck.get() == 0 && System.nanoTime() < deadline) {
          try {
            zk.setData("/bench/k00000", new byte[] {'s'}, -1);
            if (sessionAck.compareAndSet(0, System.nanoTime())) bothDone.countDown();
          } catch (Exception e) {
            sleepMs(retryMs);
          }
        }
        return null;
      });
    }
    // "fresh": a new handle every fresh_ms per survivor, each writing once it has
    // a session; shows when the servers take writes again, without the client's
    // reconnect delay. Handles are closed off the probing threads (close can block).
    for (String s : survivors) {
      pool.submit(() -> {
        List<ZooKeeper> live = new ArrayList<>();
        while (freshAck.get() == 0 && System.nanoTime() < deadline) {
          CountDownLatch ready = new CountDownLatch(1);
          ZooKeeper zk = new ZooKeeper(s, 4000, e -> {
            if (e.getState() == Watcher.Event.KeeperState.SyncConnected) ready.countDown();
          });
          live.add(zk);
          pool.submit(() -> {
            if (!ready.await(2000, TimeUnit.MILLISECONDS)) return null;
            zk.setData("/bench/k00000", new byte[] {'n'}, -1, (rc, p, c, st) -> {
              if (rc == 0 && freshAck.compareAndSet(0, System.nanoTime())) bothDone.countDown();
            }, null);
            return null;
          });
          if (live.size() > 50) { // bounded: the oldest attempts are given up
            ZooKeeper old = live.remove(0);
            pool.submit(() -> {
              old.close(100);
              return null;
            });
          }
          sleepMs(freshMs);
        }
        return null;
      });
    }
    bothDone.await(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
    System.out.println("ACK kind=session ns=" + sessionAck.get());
    System.out.println("ACK kind=fresh ns=" + freshAck.get());
    System.out.flush();
  }

  static void sleepMs(int ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
"""
