from bridge_cli.cli import main

main()
