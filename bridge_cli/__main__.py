from bridge_cli.entry import main

main()
