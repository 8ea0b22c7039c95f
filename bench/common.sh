# Sourced by the gateway benchmarks: needs $WORK (an empty directory). Writes
# the upstream's bodies and nginx configs, and defines gateway_config.
#
# Ports: upstream 18081, nginx proxy 18082, rempart 18083 (admin 18084).
# shellcheck shell=bash
UP=18081; NGX=18082; REM=18083; ADMIN=18084
mkdir -p "$WORK/up/html" "$WORK/up/logs" "$WORK/px/logs"
head -c 100 /dev/zero | tr '\0' 'x' > "$WORK/up/html/small"
head -c 16384 /dev/zero | tr '\0' 'x' > "$WORK/up/html/large"
# nginx's workers run as www-data: they must be able to read the bodies.
chmod -R a+rX "$WORK"

cat > "$WORK/up/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $WORK/up/nginx.pid;
error_log $WORK/up/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; root $WORK/up/html; location / { default_type text/plain; } }
}
CONF

cat > "$WORK/px/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $WORK/px/nginx.pid;
error_log $WORK/px/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF

gateway_config() { # $1 = idle|policies
    cat <<CONF
[server]
listen = "127.0.0.1:$REM"
admin_listen = "127.0.0.1:$ADMIN"
worker_threads = 1
drain_delay = "0s"
CONF
    if [ "$1" = policies ]; then
        # A limit no benchmark client reaches: the check runs, nothing trips.
        printf '[rate_limit]\nrate = 1000000\nburst = 1000000\n'
        printf '[[services]]\nname = "up"\nupstreams = [ "http://127.0.0.1:%s" ]\nbulkhead = { max_concurrent = 1000 }\nfallback = { stale_cache = true }\n' $UP
    else
        printf '[[services]]\nname = "up"\nupstreams = [ "http://127.0.0.1:%s" ]\ncircuit_breaker = { enabled = false }\nbulkhead = { enabled = false }\nfallback = { stale_cache = false }\n' $UP
    fi
    printf '[[routes]]\npath_prefix = "/"\nservice = "up"\n'
}

