from selfserve.cli.main import build_parser, main


def test_help_lists_every_registered_subcommand(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name in subparsers.choices:
        assert name in help_text


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: selfserve" in capsys.readouterr().out
