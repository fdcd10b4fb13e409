"""A single-node Apache Kafka (KRaft) on 127.0.0.1, from Maven Central jars: no Docker needed.

``up()`` resolves the broker jars once into ``~/.cache/tocsin/kafka/VERSION``
with Maven (``docker/kafka/pom.xml``), formats the storage once, starts
``kafka.Kafka`` in the background and waits until a metadata request
succeeds. Its pid and address are recorded in ``DATA_DIR/state.json`` so that
``up()`` twice reuses the running broker and ``down()`` can stop it.

``up(secure=SecureSetup(...))`` adds a SASL_SSL listener (SCRAM-SHA-512 and
PLAIN) on its own port, with a CA and a broker certificate made at start
(``cryptography``, PEM keystore) and the SCRAM user written at format time;
the PLAINTEXT listener stays for the broker itself (inter-broker and
controller traffic on 127.0.0.1).

A broker started for a test run or a benchmark (``up(owner_pid=...)``) gets a
watcher process: when the owner dies without calling ``down()`` (SIGKILL, a CI
timeout), the watcher stops the broker and removes its scratch directory, so no
JVM outlives the run that needed it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from tocsin.core import paths
from tocsin.core.errors import LocalKafkaError

POM_DIR = paths.REPO_ROOT / "docker" / "kafka"
DEFAULT_HEAP = "768m"  # a 2-core, 24 GiB machine shared with the test suite
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
WATCH_INTERVAL_S = 1.0


@dataclass(frozen=True)
class SecureSetup:
    """The SASL_SSL listener's user (SCRAM-SHA-512 and PLAIN accept the same password)."""

    username: str = "tocsin"
    password: str = "tocsin-secret"


@dataclass
class BrokerState:
    pid: int
    port: int
    controller_port: int
    data_dir: str
    version: str
    secure_port: int | None = None
    ca_file: str | None = None

    @property
    def secure_bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.secure_port}" if self.secure_port else None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def default_data_dir() -> Path:
    return paths.home() / "kafka"


def kafka_version() -> str:
    """The broker version pinned in docker/kafka/pom.xml."""
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", (POM_DIR / "pom.xml").read_text())
    if not m:
        raise LocalKafkaError(f"{POM_DIR / 'pom.xml'}: no <kafka.version> property")
    return m.group(1)


def ensure_jars(progress: bool = False) -> Path:
    """Resolves the broker's jars into the cache once; returns the libs directory."""
    version = kafka_version()
    libs = paths.cache_dir() / "kafka" / version / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError("Maven (mvn) is not installed: install Java 17+ and Maven, "
                              "or set KAFKA_BOOTSTRAP_SERVERS")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs.", dir=libs.parent))
    cmd = [mvn, "-B", "-f", str(POM_DIR / "pom.xml"), "dependency:copy-dependencies", f"-Dlibs.dir={staging}"]
    if not progress:
        cmd.insert(2, "-q")
    proc = subprocess.run(cmd, capture_output=not progress, text=True)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = (proc.stdout or "")[-2000:] + (proc.stderr or "")[-2000:]
        raise LocalKafkaError(f"mvn could not resolve Kafka {version} from Maven Central:\n{tail}")
    try:
        staging.rename(libs)  # atomic: a concurrent resolver either wins or finds it done
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists": look at its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_state(data_dir: Path | None = None) -> BrokerState | None:
    path = Path(data_dir or default_data_dir()) / "state.json"
    try:
        return BrokerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running(data_dir: Path | None = None) -> BrokerState | None:
    """The recorded broker if its process is still alive."""
    state = read_state(data_dir)
    if state and _pid_alive(state.pid):
        return state
    return None


def resolve_bootstrap(configured: str) -> str:
    """The configured servers, else the local broker's address, else 127.0.0.1:9092."""
    if configured:
        return configured
    state = running()
    return state.bootstrap if state else "127.0.0.1:9092"


def metadata_ok(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when the broker answers a metadata request."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError as _KafkaError

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000) + 1000,
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except _KafkaError:
        return False
    try:
        consumer.topics()
        return True
    except _KafkaError:
        return False
    finally:
        consumer.close()


def _render_config(data_dir: Path, port: int, controller_port: int, secure: SecureSetup | None = None,
                   secure_port: int | None = None) -> Path:
    text = (POM_DIR / "server.properties.template").read_text()
    for key, value in {"PORT": port, "CONTROLLER_PORT": controller_port, "DATA_DIR": data_dir}.items():
        text = text.replace("${" + key + "}", str(value))
    if secure is not None:
        tls = _make_certificates(data_dir / "tls")
        listener = f"SASL_SSL://127.0.0.1:{secure_port}"
        text = (text.replace(f"listeners=PLAINTEXT://127.0.0.1:{port},",
                             f"listeners=PLAINTEXT://127.0.0.1:{port},{listener},")
                .replace(f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                         f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},{listener}")
                .replace("listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                         "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL"))
        plain = (f'org.apache.kafka.common.security.plain.PlainLoginModule required '
                 f'user_{secure.username}="{secure.password}";')
        text += "\n".join([
            "", "# SASL_SSL listener (localkafka --secure)",
            "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
            f"listener.name.sasl_ssl.plain.sasl.jaas.config={plain}",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PEM", f"ssl.keystore.location={tls / 'broker.pem'}", "",
        ])
    out = data_dir / "server.properties"
    out.write_text(text)
    return out


def _make_certificates(directory: Path) -> Path:
    """A CA (``ca.pem``) and a broker certificate for 127.0.0.1/localhost signed by it, with its key, in
    ``broker.pem`` (Kafka's PEM keystore: key then chain). Made once per data directory."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if (directory / "broker.pem").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tocsin local CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "broker.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem) + ca.public_bytes(pem))
    os.chmod(directory / "broker.pem", 0o600)
    return directory


def _log_tail(data_dir: Path, n: int = 30) -> str:
    lines: list[str] = []
    for name in ("stdout.log", "logs/server.log"):
        with contextlib.suppress(OSError):
            lines += (data_dir / name).read_text(errors="replace").splitlines()[-n:]
    return "\n".join(lines[-n:])


def up(port: int | None = None, data_dir: Path | None = None, heap: str = DEFAULT_HEAP,
       timeout_s: float = START_TIMEOUT_S, owner_pid: int | None = None, remove_on_orphan: bool = False,
       secure: SecureSetup | None = None) -> BrokerState:
    """Starts the local broker, or returns the one already running for ``data_dir``.

    With ``owner_pid`` the new broker is stopped when that process dies (and ``data_dir`` removed
    with ``remove_on_orphan``): for brokers that belong to one test run or benchmark.
    """
    data_dir = Path(data_dir or default_data_dir()).resolve()
    state = running(data_dir)
    if state is not None and (port is None or port == state.port) and metadata_ok(state.bootstrap, timeout_s=10):
        return state
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError("java is not installed: install Java 17+, or set KAFKA_BOOTSTRAP_SERVERS")
    libs = ensure_jars()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(exist_ok=True)
    port = port or _free_port()
    controller_port = _free_port()
    secure_port = _free_port() if secure is not None else None
    config = _render_config(data_dir, port, controller_port, secure, secure_port)
    classpath = f"{libs}/*"
    if not (data_dir / "log" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        scram = ["--add-scram", f"SCRAM-SHA-512=[name={secure.username},password={secure.password}]"] \
            if secure is not None else []
        fmt = subprocess.run(
            # "--cluster-id=" form: a random id starting with "-" would read as an option otherwise.
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c",
             str(config), *scram],
            capture_output=True, text=True,
        )
        if fmt.returncode != 0:
            raise LocalKafkaError(f"formatting Kafka storage in {data_dir} failed:\n{fmt.stdout}{fmt.stderr}")
    cmd = [
        java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true", f"-Dkafka.logs.dir={data_dir / 'logs'}",
        f"-Dlog4j2.configurationFile={POM_DIR / 'log4j2.properties'}",
        "-cp", classpath, "kafka.Kafka", str(config),
    ]
    with open(data_dir / "stdout.log", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=data_dir)
    state = BrokerState(proc.pid, port, controller_port, str(data_dir), kafka_version(), secure_port,
                        str(data_dir / "tls" / "ca.pem") if secure is not None else None)
    (data_dir / "state.json").write_text(json.dumps(asdict(state)))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalKafkaError(f"the broker exited with {proc.returncode} while starting:\n{_log_tail(data_dir)}")
        if metadata_ok(state.bootstrap, timeout_s=2):
            if owner_pid is not None:
                _start_watcher(owner_pid, proc.pid, data_dir if remove_on_orphan else None)
            return state
        time.sleep(0.5)
    _stop_pid(proc.pid)
    raise LocalKafkaError(f"the broker did not answer within {timeout_s:.0f} s:\n{_log_tail(data_dir)}")


def _stop_pid(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM, wait, then SIGKILL; True if it had to be killed."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return False
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _start_watcher(owner_pid: int, broker_pid: int, remove: Path | None) -> None:
    args = [str(owner_pid), str(broker_pid)] + ([str(remove)] if remove else [])
    subprocess.Popen([sys.executable, "-m", "tocsin.core.localkafka", *args], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def watch(owner_pid: int, broker_pid: int, remove: Path | None = None) -> None:
    """Until the broker stops: once ``owner_pid`` is gone, stop the broker (and remove ``remove``).

    Runs in its own session, so killing the owner's process group does not take it along.
    """
    while _pid_alive(broker_pid):
        if not _pid_alive(owner_pid):
            _stop_pid(broker_pid)
            if remove is not None:
                shutil.rmtree(remove, ignore_errors=True)
            return
        time.sleep(WATCH_INTERVAL_S)


def down(data_dir: Path | None = None, timeout_s: float = STOP_TIMEOUT_S) -> BrokerState | None:
    """Stops the recorded broker, gracefully then forcefully; returns what was stopped."""
    data_dir = Path(data_dir or default_data_dir()).resolve()
    state = read_state(data_dir)
    if state is None:
        return None
    if _pid_alive(state.pid):
        _stop_pid(state.pid, timeout_s)
    (data_dir / "state.json").unlink(missing_ok=True)
    return state


if __name__ == "__main__":  # the watcher: python -m tocsin.core.localkafka OWNER_PID BROKER_PID [DIR]
    watch(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
