# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_fixgate_global_optspecs
    string join \n h/help V/version
end

function __fish_fixgate_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_fixgate_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_fixgate_using_subcommand
    set -l cmd (__fish_fixgate_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c fixgate -n "__fish_fixgate_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c fixgate -n "__fish_fixgate_needs_command" -s V -l version -d 'Print version'
complete -c fixgate -n "__fish_fixgate_needs_command" -f -a "run" -d 'Run the daemon'
complete -c fixgate -n "__fish_fixgate_needs_command" -f -a "check-config" -d 'Check a configuration file: exit 0, or print every problem as `file:line:col: message`'
complete -c fixgate -n "__fish_fixgate_needs_command" -f -a "nmea" -d 'Decode NMEA 0183 into one JSON line per fix epoch'
complete -c fixgate -n "__fish_fixgate_needs_command" -f -a "simulate" -d 'Simulate a fleet of GPS trackers publishing realistic tracks over MQTT or HTTP'
complete -c fixgate -n "__fish_fixgate_needs_command" -f -a "encode" -d 'Encode JSON Lines (from `fixgate nmea` or `fixgate decode`) as length-delimited upstream batches on stdout'
complete -c fixgate -n "__fish_fixgate_needs_command" -f -a "decode" -d 'Decode length-delimited upstream batches into one JSON line per record'
complete -c fixgate -n "__fish_fixgate_needs_command" -f -a "token" -d 'Make a random access token (32 bytes, base64url) and print it with the `hash = "sha256:…"` line for an [[access.token]] entry'
complete -c fixgate -n "__fish_fixgate_using_subcommand run" -s c -l config -d 'The configuration file' -r -F
complete -c fixgate -n "__fish_fixgate_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c fixgate -n "__fish_fixgate_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c fixgate -n "__fish_fixgate_using_subcommand nmea" -s h -l help -d 'Print help'
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l mqtt -d 'MQTT broker to publish to' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l http -d 'POST to this HTTP server instead of MQTT (e.g. http://127.0.0.1:8080)' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l devices -d 'Number of simulated devices' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l rate -d 'Fixes per second per device (0.001 to 100); devices are staggered over the period' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l duration -d 'How long to run (e.g. 30s, 5m); default: until Ctrl-C or SIGTERM' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l center -d 'The depot the routes start from' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l seed -d 'Seed of the routes and noise [default: random, logged at start]' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l prefix -d 'Device ids are this prefix followed by 1..=N' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l noise-m -d 'Extra position noise in metres (standard deviation per axis), on top of the fleet\'s own ~0.5 m' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l format -d 'MQTT payload format' -r -f -a "json\t'fixgate JSON, one fix per message'
owntracks\t'OwnTracks `location` messages'
nmea\t'One NMEA 0183 epoch per message'"
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l topic -d 'Topic template; {device} is the device id [default: fleet/sim/device/{device}/fix; owntracks: owntracks/sim/{device}; nmea: fleet/sim/device/{device}/fix]' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l qos -d 'MQTT QoS of every message' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l username -d 'MQTT user name' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l password -d 'MQTT password' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l client-id-prefix -d 'Client ids are this prefix followed by the device id (or `shared`)' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l connections -d 'One MQTT connection per device (as real trackers do), or one shared by all' -r -f -a "per-device\t'One connection per device, as real trackers do'
shared\t'One connection for the whole fleet'"
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l tls-ca -d 'Connect with TLS, trusting the CA certificate in this PEM file' -r -F
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l http-format -d 'HTTP request format: osmand = POST URL/osmand?id=..&lat=.. with an empty body (as Traccar Client); json = POST URL/api/fixes with a JSON array' -r -f -a "osmand\t'`POST /osmand?id=..&lat=..` with an empty body, as Traccar Client sends'
json\t'`POST /api/fixes` with a JSON array of positions'"
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l token -d 'Sent as the header `Authorization: Bearer TOKEN` (never in the query string)' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l http-workers -d 'Concurrent HTTP requests' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l offline-every -d 'Each device goes offline this often (staggered across the fleet), buffers its fixes and sends them, oldest first, when back' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l offline-for -d 'How long each outage lasts' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l bad-every -d 'Every Nth message of the fleet is a bad payload instead, cycling through malformed, unknown format, oversized (200 KiB), latitude 123, no latitude' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -l stats -d 'Print progress to stderr every 10 s (the summary line at the end is always printed)'
complete -c fixgate -n "__fish_fixgate_using_subcommand simulate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c fixgate -n "__fish_fixgate_using_subcommand encode" -l gateway -d 'Gateway id of the batches [default: the lines\' own, else fixgate]' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand encode" -l device -d 'Device of lines that name none (as `fixgate nmea` prints them)' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand encode" -l max-records -d 'Records per batch' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand encode" -l batch-id -d 'Id of the first batch; the next ones count up' -r
complete -c fixgate -n "__fish_fixgate_using_subcommand encode" -s h -l help -d 'Print help'
complete -c fixgate -n "__fish_fixgate_using_subcommand decode" -s h -l help -d 'Print help'
complete -c fixgate -n "__fish_fixgate_using_subcommand token" -l out -d 'Write the token to this new file (mode 0640; an existing file is left alone and is an error) instead of printing it' -r -F
complete -c fixgate -n "__fish_fixgate_using_subcommand token" -l hash-of -d 'Print the hash line of the token in this file (`-`: standard input)' -r -F
complete -c fixgate -n "__fish_fixgate_using_subcommand token" -s h -l help -d 'Print help (see more with \'--help\')'
