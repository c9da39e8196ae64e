# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_tokenwarden_global_optspecs
    string join \n config= log-format= h/help V/version
end

function __fish_tokenwarden_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_tokenwarden_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_tokenwarden_using_subcommand
    set -l cmd (__fish_tokenwarden_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -s V -l version -d 'Print version'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "run" -d 'Sweep now and then on the schedule until SIGTERM or SIGINT'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "add" -d 'Import a credential. Its refresh token is read from standard input or --refresh-token-file'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "status" -d 'Show every credential: status, expiry, last refresh, failures, last error'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "token" -d 'Print the current access token of NAME (or of --owner\'s credential at --provider), renewed first when it expires within --min-valid; exit 4 when there is no valid one, 1 when the renewal failed. Only the token goes to standard output'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "exec" -d 'Run COMMAND with a fresh access token of NAME (renewed as `token` does) in an environment variable, and Salesforce\'s instance URL in INSTANCE_URL; never on a command line. Exits with COMMAND\'s exit code (128 + the signal when a signal ended it)'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "refresh" -d 'Refresh NAME now, due or not'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "log" -d 'Show the rotation history, of NAME or of all credentials'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "check-config" -d 'Validate the configuration and the secrets it references'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "doctor" -d 'Preflight: probe each provider (never with a real token) and review each credential'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "authorize" -d 'Authorize NAME in a browser (authorization code with PKCE) and store its tokens. The URL to open is printed alone on standard output, instructions on standard error; the redirect comes back to a listener on 127.0.0.1. Authorizing an existing NAME replaces its tokens'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "revoke" -d 'Revoke NAME\'s tokens at the provider (RFC 7009) and delete NAME. When the provider cannot be reached, NAME stays disabled and the revocation is sent again later'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "migrate" -d 'Copy this configuration\'s SQLite database (credentials and journal, ids and sealed tokens as stored) into an empty PostgreSQL database, migrated first, and compare every row after the copy. The source is only read; refused (exit 6) while a claim in it runs. The password comes from [postgres] password_file or password_env'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "rekey" -d 'Re-seal every stored token under the current [encryption] key, in small transactions (safe beside the daemon, and to interrupt and run again); then report how many tokens each key still seals. Exit 1 when some rows were left (in use throughout, or unreadable)'
complete -c tokenwarden -n "__fish_tokenwarden_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand run" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand run" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand run" -l once -d 'Sweep once and exit: 0 when every due credential was refreshed, 1 when any failed'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand run" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l provider -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l grant -r -f -a "refresh-token\t''
client-credentials\t''
jwt-bearer\t'RFC 7523: each access token for an assertion signed with the provider\'s private_key_file'"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l owner -d 'Who the credential belongs to' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l subject -d 'jwt-bearer: the assertion\'s subject, the user or service account to act as (default: the owner; neither: no `sub`, as a Google service account acting as itself)' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l scopes -d 'Space-separated scopes; default: the provider\'s' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l refresh-token-file -d 'Read the refresh token from this file instead of standard input' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l replace -d 'Replace the tokens of an existing credential of that name'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -l allow-same-owner -d 'Add it even though --owner already has a credential of this provider'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand status" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand status" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand status" -l json
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand status" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand token" -l provider -d 'With --owner: the provider of the owner\'s credential' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand token" -l owner -d 'With --provider: the credential of this owner; an error when the owner has several' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand token" -l min-valid -d 'Renew the access token first when it expires sooner than this (default: the configuration\'s token_min_valid, 60s)' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand token" -l wait -d 'Longest wait for a refresh that another process has in flight' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand token" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand token" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand token" -l header -d 'Print `Authorization: <type> <token>`, a header line for `curl -H @-`'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand token" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand exec" -l provider -d 'With --owner: the provider of the owner\'s credential' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand exec" -l owner -d 'With --provider: the credential of this owner; an error when the owner has several' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand exec" -l min-valid -d 'Renew the access token first when it expires sooner than this (default: the configuration\'s token_min_valid, 60s)' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand exec" -l wait -d 'Longest wait for a refresh that another process has in flight' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand exec" -l env -d 'The environment variable that receives the access token' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand exec" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand exec" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand exec" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand refresh" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand refresh" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand refresh" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand log" -l limit -d 'How many of the newest entries' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand log" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand log" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand log" -l json
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand log" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand check-config" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand check-config" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand doctor" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand doctor" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -l provider -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -l owner -d 'Who the credential belongs to (kept from before when authorizing again without it)' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -l scopes -d 'Space-separated scopes; default: the provider\'s' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -l timeout -d 'How long to wait for the redirect (default 5m), or with --device for the approval (default: as long as the user code lives)' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -l manual -d 'Also read the redirect URL (or just the code) pasted on standard input: for machines without a browser'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -l device -d 'The device authorization grant (RFC 8628), for a machine without a browser: prints where to enter which code on any other device (the URL alone on standard output), and waits for the approval there'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -l allow-same-owner -d 'Authorize it even though --owner already has another credential of this provider'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand authorize" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand revoke" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand revoke" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand revoke" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand migrate" -l to -d 'The destination: postgres://user@host:port/database (sslmode etc. as for `database`)' -r
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand migrate" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand migrate" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand migrate" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand rekey" -l config -d 'Configuration file (TOML). Without one, the embedded defaults apply' -r -F
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand rekey" -l log-format -d 'Log format; overrides the configuration\'s log.format' -r -f -a "text\t''
json\t''"
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand rekey" -l decrypt -d 'Store every token as plaintext instead: the way to turn sealing off (with the keys still configured, to open them)'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand rekey" -s h -l help -d 'Print help'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "run" -d 'Sweep now and then on the schedule until SIGTERM or SIGINT'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "add" -d 'Import a credential. Its refresh token is read from standard input or --refresh-token-file'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "status" -d 'Show every credential: status, expiry, last refresh, failures, last error'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "token" -d 'Print the current access token of NAME (or of --owner\'s credential at --provider), renewed first when it expires within --min-valid; exit 4 when there is no valid one, 1 when the renewal failed. Only the token goes to standard output'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "exec" -d 'Run COMMAND with a fresh access token of NAME (renewed as `token` does) in an environment variable, and Salesforce\'s instance URL in INSTANCE_URL; never on a command line. Exits with COMMAND\'s exit code (128 + the signal when a signal ended it)'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "refresh" -d 'Refresh NAME now, due or not'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "log" -d 'Show the rotation history, of NAME or of all credentials'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "check-config" -d 'Validate the configuration and the secrets it references'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "doctor" -d 'Preflight: probe each provider (never with a real token) and review each credential'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "authorize" -d 'Authorize NAME in a browser (authorization code with PKCE) and store its tokens. The URL to open is printed alone on standard output, instructions on standard error; the redirect comes back to a listener on 127.0.0.1. Authorizing an existing NAME replaces its tokens'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "revoke" -d 'Revoke NAME\'s tokens at the provider (RFC 7009) and delete NAME. When the provider cannot be reached, NAME stays disabled and the revocation is sent again later'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "migrate" -d 'Copy this configuration\'s SQLite database (credentials and journal, ids and sealed tokens as stored) into an empty PostgreSQL database, migrated first, and compare every row after the copy. The source is only read; refused (exit 6) while a claim in it runs. The password comes from [postgres] password_file or password_env'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "rekey" -d 'Re-seal every stored token under the current [encryption] key, in small transactions (safe beside the daemon, and to interrupt and run again); then report how many tokens each key still seals. Exit 1 when some rows were left (in use throughout, or unreadable)'
complete -c tokenwarden -n "__fish_tokenwarden_using_subcommand help; and not __fish_seen_subcommand_from run add status token exec refresh log check-config doctor authorize revoke migrate rekey help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
